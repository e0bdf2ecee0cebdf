"""Import cycles on grimp's graph, for the architecture test and scripts/layout_metrics.py."""

from __future__ import annotations

from typing import Any


def import_cycles(graph: Any) -> list[tuple[str, ...]]:
    """Every import cycle among the graph's modules, each once (its shortest ring, starting
    at its smallest module name), shortest first."""
    rings: set[tuple[str, ...]] = set()
    for module in sorted(graph.modules):
        for other in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=other, imported=module)
            if back:
                ring = [module, *back[:-1]]
                start = ring.index(min(ring))
                rings.add(tuple(ring[start:] + ring[:start]))
    return sorted(rings, key=lambda ring: (len(ring), ring))
