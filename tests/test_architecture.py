"""Architecture rules as code: the import contracts in ``pyproject.toml``.

``lint-imports`` (import-linter, on grimp's import graph, which includes the
imports made inside functions) checks that the product (``chatling``,
``training``) never imports the tests, benchmarks, scripts or dev tools, and
that the dev tools import none of those either. The second test shows the
checker would catch a break: a contract the tree is known to break (the CLI's
function-level imports of ``training``) is reported as broken.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from chatling.settings import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


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
        'source_modules = ["chatling.cli"]\n'
        'forbidden_modules = ["chatling.training"]\n'
    )
    result = _lint("--config", str(config))
    assert result.returncode != 0
    assert "chatling.cli -> chatling.training." in result.stdout


def test_dev_tools_are_not_in_the_installed_package() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include and not any(pattern.startswith("devtools") for pattern in include)
