"""Architecture rules as code: the import contracts in ``pyproject.toml``, and two
rules a contract there cannot say, checked here on the same import graph.

``lint-imports`` (import-linter, on grimp's import graph, which includes the
imports made inside functions) checks that the product (``chatling``) never
imports the tests, benchmarks, scripts or dev tools, and that the dev tools
import none of those either. The second test shows the checker would catch a
break: a contract the tree is known to break (the CLI's function-level
imports of ``chatling.training``) is reported as broken. Then, on grimp's
graph directly: only ``chatling.cli`` imports ``chatling.cli`` (it is the one
place commands are wired together), and the core modules (``chatling.core``: settings,
errors, events, clock, paths) import nothing else of the product, so every layer can use them.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from chatling.core.paths import PROJECT_ROOT
from devtools.import_graph import import_cycles

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CORE = frozenset(
    {
        "chatling.core.settings",
        "chatling.core.errors",
        "chatling.core.events",
        "chatling.core.clock",
    }
)


def _graph():  # type: ignore[no-untyped-def]
    import grimp

    return grimp.build_graph("chatling")


def _cli_importers(graph) -> list[str]:  # type: ignore[no-untyped-def]
    """Product modules outside chatling.cli (and the ``python -m chatling`` shim) importing it."""
    return sorted(
        f"{module} -> {imported}"
        for module in graph.modules
        if not module.startswith("chatling.cli") and module != "chatling.__main__"
        for imported in graph.find_modules_directly_imported_by(module)
        if imported == "chatling.cli" or imported.startswith("chatling.cli.")
    )


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " kept, 0 broken" in result.stdout


def test_a_function_level_import_that_breaks_a_contract_is_caught(tmp_path) -> None:
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["chatling"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "probe"\n'
        'type = "forbidden"\n'
        'source_modules = ["chatling.cli.main"]\n'
        'forbidden_modules = ["chatling.training"]\n'
    )
    result = _lint("--config", str(config))
    assert result.returncode != 0
    assert "-> chatling.training." in result.stdout and "BROKEN" in result.stdout


def test_dev_tools_are_not_in_the_installed_package() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include and not any(pattern.startswith("devtools") for pattern in include)


def test_only_the_cli_imports_the_cli() -> None:
    graph = _graph()
    assert _cli_importers(graph) == []
    # The check sees an import it should refuse (grimp's graph, as lint-imports reads it).
    graph.add_import(importer="chatling.reply", imported="chatling.cli.common")
    assert _cli_importers(graph) == ["chatling.reply -> chatling.cli.common"]


def test_core_modules_import_nothing_else_of_the_product() -> None:
    graph = _graph()
    core = {m for m in graph.modules if m == "chatling.core" or m.startswith("chatling.core.")}
    assert {"chatling.core.settings", "chatling.core.paths", "chatling.core.events"} <= core
    for module in core:
        product = {
            m for m in graph.find_modules_directly_imported_by(module) if m.startswith("chatling")
        }
        assert product <= core, f"{module} imports {sorted(product - core)}"


def test_no_import_cycles() -> None:
    """Imports made under TYPE_CHECKING count too: a type cycle is still two rooms that
    cannot be read one without the other."""
    graph = _graph()
    assert import_cycles(graph) == []
    graph.add_import(importer="chatling.core.events", imported="chatling.reply")
    assert import_cycles(graph), "the check must see a cycle it is shown"
