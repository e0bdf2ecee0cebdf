"""Contrast pairs: the real message of a moment beats messages of other moments (for DPO).

SFT teaches the adapter what chat says in general: it lowers the perplexity of
real messages a lot (290 -> 61 on the DougDoug test part) but ranks them no
better among other real messages, because the generic, frequent ones gain as
much as the right one (``docs/results.md``). What the evaluation asks, and
what a live bot needs, is *which* message fits *this* moment. So after SFT
chatling can run a DPO step on pairs built from the training data itself:

    prompt   = the live prompt of a pair (transcript and chat before the message)
    chosen   = the message really posted there
    rejected = a message of the same training data posted at least ``gap_s``
               away (or in another stream), drawn like the evaluation's
               distractors: one of the most frequent messages, one of the
               messages most similar to the real one (TF-IDF), or a random one

``negatives`` per pair cycle through those three kinds. Messages posted within
``gap_s`` of the pair are never rejected: a message someone wrote in the same
moment is no distractor. The draw is seeded, so the same data and config give
the same pairs. The pool is the training data only, so test messages never
enter training this way either.

DPO's reference is the SFT adapter (``chatling.training.dpo.dpo``): the step widens
``log p(real | moment) - log p(other | moment)`` relative to what SFT gave,
which is the summed-log-probability ranking ``chatling eval`` measures.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chatling.core.errors import ConfigError
from chatling.prompt import PromptBuilder, PromptParts
from chatling.safety import dedupe_key
from chatling.training.data.pairs import Pair, render_prompt
from chatling.training.dpo.preference import PreferencePair
from chatling.training.eval.evaluate import CandidatePool

log = logging.getLogger(__name__)

KINDS = ("frequent", "similar", "random")
"""The distractor kinds, in the order a pair's negatives cycle through them."""


@dataclass(frozen=True, slots=True)
class ContrastConfig:
    """How contrast pairs are drawn (saved in the adapter's metadata)."""

    negatives: int = 3
    """Rejected messages per real message (each makes one DPO pair)."""
    gap_s: float = 60.0
    """Rejected messages come from at least this far away in the same stream."""
    n_frequent: int = 20
    """The ``frequent`` kind draws from this many most frequent messages (as evaluation)."""
    n_similar: int = 20
    """The ``similar`` kind draws from this many nearest messages by TF-IDF (as evaluation)."""
    seed: int = 0

    def check(self) -> None:
        if self.negatives < 1 or self.gap_s < 0 or self.n_frequent < 1 or self.n_similar < 1:
            raise ConfigError(
                "contrast needs negatives >= 1, gap_s >= 0, n_frequent >= 1 and n_similar >= 1"
            )


class _Moments:
    """Keys of the messages near a time, per stream (for excluding same-moment messages)."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        by_source: dict[str, list[tuple[float, str]]] = {}
        for p in pairs:
            by_source.setdefault(p.source, []).append((p.offset, dedupe_key(p.target)))
        self._rows = {source: sorted(rows) for source, rows in by_source.items()}
        self._times = {source: [t for t, _ in rows] for source, rows in self._rows.items()}

    def near(self, pair: Pair, gap_s: float) -> set[str]:
        times = self._times[pair.source]
        lo = bisect.bisect_left(times, pair.offset - gap_s)
        hi = bisect.bisect_right(times, pair.offset + gap_s)
        return {key for _, key in self._rows[pair.source][lo:hi]}


def _pick(
    order: Sequence[int] | np.ndarray, pool: CandidatePool, excluded: set[str],
    rng: np.random.Generator,
) -> int | None:  # fmt: skip
    """A random pool index among ``order`` whose message is not excluded."""
    allowed = [int(j) for j in order if pool.keys[j] not in excluded]
    return allowed[int(rng.integers(len(allowed)))] if allowed else None


def _nearest(pool: CandidatePool, text: str, limit: int) -> np.ndarray:
    """Pool indices of the ``limit`` messages most similar to ``text`` (TF-IDF, shared words)."""
    sims = pool.index.similarities(text)
    close = np.flatnonzero(sims > 0)
    return close[np.argsort(-sims[close], kind="stable")][:limit]


def draw_negatives(pairs: Sequence[Pair], config: ContrastConfig) -> list[tuple[int, str, str]]:
    """(pair index, rejected text, kind) for every pair that has a usable message.

    A kind with nothing left to draw (a tiny pool, everything near the pair)
    falls back to ``random``; a pair with no allowed message at all gets none.
    """
    config.check()
    pool = CandidatePool.from_messages([p.target for p in pairs])
    frequent = pool.frequent_order()[: config.n_frequent]
    moments = _Moments(pairs)
    everyone = np.arange(len(pool.texts))
    wants_similar = config.negatives > KINDS.index("similar")
    out: list[tuple[int, str, str]] = []
    for i, pair in enumerate(pairs):
        if not dedupe_key(pair.target):
            continue
        rng = np.random.default_rng([config.seed, i])
        excluded = moments.near(pair, config.gap_s)
        orders = {
            "frequent": frequent,
            "similar": _nearest(pool, pair.target, config.n_similar)
            if wants_similar
            else everyone[:0],
            "random": everyone,
        }
        for k in range(config.negatives):
            kind = KINDS[k % len(KINDS)]
            j = _pick(orders[kind], pool, excluded, rng)
            if j is None and kind != "random":
                kind, j = "random", _pick(everyone, pool, excluded, rng)
            if j is None:
                break
            excluded.add(pool.keys[j])  # never the same rejected message twice
            out.append((i, pool.texts[j], kind))
    return out


def contrast_pairs(
    pairs: Sequence[Pair], builder: PromptBuilder, config: ContrastConfig
) -> list[PreferencePair]:
    """DPO pairs: each pair's live prompt, its real message chosen, other moments' rejected."""
    negatives = draw_negatives(pairs, config)
    prompts: dict[int, PromptParts] = {}
    out = []
    for i, rejected, _kind in negatives:
        if i not in prompts:
            prompts[i] = render_prompt(pairs[i], builder)
        parts = prompts[i]
        out.append(
            PreferencePair(
                system=parts.system,
                user=parts.user,
                chosen=pairs[i].target.strip(),
                rejected=rejected,
                form=parts.form,
            )
        )
    kinds = {k: sum(1 for *_, kind in negatives if kind == k) for k in KINDS}
    log.info(
        "%d contrast pairs from %d real messages (%s)",
        len(out),
        len(prompts),
        ", ".join(f"{n} {k}" for k, n in kinds.items()),
    )
    if not out:
        raise ConfigError(
            "no contrast pairs: every message is within gap_s of every other; "
            "use more data or a smaller gap"
        )
    return out


__all__ = ["KINDS", "ContrastConfig", "contrast_pairs", "draw_negatives"]
