"""A held-out moment of stream with its frozen candidates: what every ranker is scored on.

Its own module because both ``chatling.training.eval.evaluate`` (which makes and scores
the points) and ``chatling.training.eval.rankers`` (which ranks a point's candidates) need
it, and neither should import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatling.training.data.pairs import Pair


@dataclass(frozen=True, slots=True)
class TestPoint:
    """A moment of held-out stream with its frozen candidates."""

    __test__ = False  # not a pytest class

    id: int
    source: str
    t: float
    pair: Pair
    """The input: context of the first message after ``t`` (its target is one ground truth)."""
    candidates: tuple[str, ...]
    truth: tuple[bool, ...]
    origins: tuple[str, ...]
    """``truth``, ``frequent``, ``similar`` or ``random``, per candidate."""
    n_truth_window: int
    """Distinct messages in the window before the ``max_truth`` cap."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "t": self.t,
            "n_truth_window": self.n_truth_window,
            "context": self.pair.to_row(),
            "candidates": [
                {"text": c, "truth": t, "origin": o}
                for c, t, o in zip(self.candidates, self.truth, self.origins, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TestPoint:
        cands = data["candidates"]
        return cls(
            id=int(data["id"]),
            source=str(data["source"]),
            t=float(data["t"]),
            pair=Pair.from_row(data["context"]),
            candidates=tuple(str(c["text"]) for c in cands),
            truth=tuple(bool(c["truth"]) for c in cands),
            origins=tuple(str(c["origin"]) for c in cands),
            n_truth_window=int(data["n_truth_window"]),
        )


__all__ = ["TestPoint"]
