"""The layout issue's numbers for a checkout: big files, long functions, import cycles.

    .venv/bin/python scripts/layout_metrics.py [REPO_DIR]

Counts the product's Python files (``bot/`` and ``training/`` before the move, ``chatling/``
after it) over 400 lines, lists the five longest functions, and finds
the import cycles among the product's modules, counting imports made inside
functions and under ``TYPE_CHECKING`` (grimp, the graph import-linter uses).
``duplicates`` (the dev tool) gives the near-copy pairs separately.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools import import_graph

PRODUCT = ("bot", "training", "chatling")  # before and after the move to one package


def python_files(root: Path) -> list[Path]:
    return sorted(p for d in PRODUCT if (root / d).is_dir() for p in (root / d).rglob("*.py"))


def long_functions(path: Path, root: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            out.append((length, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return out


def import_cycles(root: Path) -> list[list[str]]:
    import grimp

    sys.path.insert(0, str(root))
    packages = [d for d in PRODUCT if (root / d / "__init__.py").exists()]
    graph = grimp.build_graph(*packages, cache_dir=None)
    return [list(c) for c in import_graph.import_cycles(graph)]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    files = python_files(root)
    sizes = {
        str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines()) for p in files
    }
    functions = sorted((f for p in files for f in long_functions(p, root)), reverse=True)
    cycles = import_cycles(root)
    result = {
        "product_files": len(files),
        "product_lines": sum(sizes.values()),
        "files_over_400_lines": sorted(
            ([n, lines] for n, lines in sizes.items() if lines > 400), key=lambda x: -x[1]
        ),
        "longest_functions": [f"{length} lines {where}" for length, where in functions[:5]],
        "import_cycles": len(cycles),
        "shortest_cycles": cycles[:5],
    }
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
