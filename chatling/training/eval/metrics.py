"""Ranking metrics with explicit ties, their random expectation, and bootstrap intervals.

Pure functions, tested on hand-made cases with known answers; plus the
statistics of generated (not ranked) messages against real chat.

**Scores are higher-is-better.** The rank of a point is the rank of its
best-ranked ground-truth candidate: ``above`` candidates score strictly higher
than the best ground truth ``s*``, ``tied`` candidates score exactly ``s*``
(``truth_tied`` of them ground truths). Nothing is sorted, so no sort order
can be wrong.

**Ties** are counted in expectation over a uniformly random order within the
tie group (``ties="expected"``, the default): the best ground truth's place in
the group follows the first-success distribution of drawing without
replacement, P(X > j) = C(m-g, j) / C(m, j). This is the average over all tie
orderings, computed exactly, never sampled. A ranker whose scores all tie is
therefore exactly a random ranking, and ``random_expectation`` is the same
formula in closed form. ``ties="pessimistic"`` puts the ground truths last in
their tie group (a lower bound).

Intervals: percentile bootstrap over test points, and a moving-block
bootstrap in which a block is a test point plus the points of the same source
that follow it within ``block_s`` seconds of stream time, since neighbouring
points share context.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from math import comb
from typing import TYPE_CHECKING, Any

import numpy as np

from chatling.safety import dedupe_key

if TYPE_CHECKING:
    from chatling.safety import SafetyFilter

KS = (1, 5, 10)
METRICS = ("recall@1", "recall@5", "recall@10", "mean_rank", "mrr")


@dataclass(frozen=True, slots=True)
class TieGroup:
    """Where the best ground truth lands: strictly above it, and its tie group."""

    above: int
    tied: int
    truth_tied: int


def tie_group(scores: np.ndarray, truth: np.ndarray) -> TieGroup:
    """The best ground truth's tie group; scores are higher-is-better."""
    scores = np.asarray(scores, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    if scores.shape != truth.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} must be equal 1-D shapes")
    if not truth.any():
        raise ValueError("a test point needs at least one ground-truth candidate")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a ranker failed on some candidate")
    best = scores[truth].max()
    return TieGroup(
        above=int((scores > best).sum()),
        tied=int((scores == best).sum()),
        truth_tied=int((truth & (scores == best)).sum()),
    )


def _first_truth_pmf(m: int, g: int) -> np.ndarray:
    """P(X = j), j = 1..m-g+1: position of the first ground truth in a random order
    of ``m`` items holding ``g`` ground truths."""
    total = comb(m, g)
    return np.asarray([comb(m - j, g - 1) / total for j in range(1, m - g + 2)])


def group_metrics(
    group: TieGroup, ks: Sequence[int] = KS, ties: str = "expected"
) -> dict[str, float]:
    """Recall@k, rank and reciprocal rank of one point, from its tie group."""
    a, m, g = group.above, group.tied, group.truth_tied
    if ties == "pessimistic":
        positions, probs = np.asarray([m - g + 1]), np.asarray([1.0])
    elif ties == "expected":
        positions, probs = np.arange(1, m - g + 2), _first_truth_pmf(m, g)
    else:
        raise ValueError(f"ties must be 'expected' or 'pessimistic', not {ties!r}")
    ranks = a + positions
    out = {f"recall@{k}": float(probs[ranks <= k].sum()) for k in ks}
    out["mean_rank"] = float((probs * ranks).sum())
    out["mrr"] = float((probs / ranks).sum())
    return out


def point_metrics(
    scores: np.ndarray, truth: np.ndarray, ks: Sequence[int] = KS, ties: str = "expected"
) -> dict[str, float]:
    """Metrics of one test point: scores (higher is better) and ground-truth flags."""
    return group_metrics(tie_group(scores, truth), ks, ties)


def random_expectation(n: int, g: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """Exact expected metrics of a uniformly random ranking of ``n`` candidates, ``g`` true.

    Recall@k = 1 - C(n-g, k) / C(n, k); mean rank = (n+1) / (g+1);
    MRR = sum_j P(first truth at j) / j.
    """
    if not 1 <= g <= n:
        raise ValueError(f"need 1 <= ground truths ({g}) <= candidates ({n})")
    out = {f"recall@{k}": 1.0 - comb(n - g, k) / comb(n, k) if k <= n else 1.0 for k in ks}
    out["mean_rank"] = (n + 1) / (g + 1)
    pmf = _first_truth_pmf(n, g)
    out["mrr"] = float((pmf / np.arange(1, n - g + 2)).sum())
    return out


# --- bootstrap ---------------------------------------------------------------------------


def point_resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Index sets of the ordinary bootstrap over ``n`` test points."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, size=n)


def blocks_of(times: Sequence[float], sources: Sequence[str], block_s: float) -> list[np.ndarray]:
    """For each point (in the given order), the indices of its block: itself and the
    points of the same source within ``block_s`` seconds after it."""
    times_a = np.asarray(times, dtype=float)
    sources_a = np.asarray(sources, dtype=object)
    order = sorted(range(len(times_a)), key=lambda i: (sources_a[i], times_a[i]))
    blocks: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(order)
    for pos, i in enumerate(order):
        members = [i]
        for j in order[pos + 1 :]:
            if sources_a[j] != sources_a[i] or times_a[j] >= times_a[i] + block_s:
                break
            members.append(j)
        blocks[i] = np.asarray(members, dtype=np.int64)
    return blocks


def block_resamples(
    times: Sequence[float], sources: Sequence[str], block_s: float, n_boot: int, seed: int
) -> Iterator[np.ndarray]:
    """Index sets of the moving-block bootstrap: random blocks joined until ``n`` points."""
    blocks = blocks_of(times, sources, block_s)
    n = len(blocks)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        parts, count = [], 0
        while count < n:
            block = blocks[int(rng.integers(0, n))]
            parts.append(block)
            count += len(block)
        yield np.concatenate(parts)[:n]


def interval(
    statistic: Callable[[np.ndarray], float], resamples: Iterator[np.ndarray], level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over the resampled index sets."""
    values = np.asarray([statistic(idx) for idx in resamples], dtype=float)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


# --- distributions of generated text ---------------------------------------------------------


def wasserstein_1d(a: Sequence[float], b: Sequence[float]) -> float:
    """Earth mover's distance between two 1-D samples: the area between their CDFs."""
    x = np.sort(np.asarray(a, dtype=float))
    y = np.sort(np.asarray(b, dtype=float))
    if x.size == 0 or y.size == 0:
        return float("nan")
    grid = np.sort(np.concatenate([x, y]))
    widths = np.diff(grid)
    cdf_x = np.searchsorted(x, grid[:-1], side="right") / x.size
    cdf_y = np.searchsorted(y, grid[:-1], side="right") / y.size
    return float((np.abs(cdf_x - cdf_y) * widths).sum())


def distinct_n(texts: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams over all n-grams of the tokenised texts (0 when there are none)."""
    grams = [tuple(t[i : i + n]) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# Common Twitch, BTTV, FFZ and 7TV emotes; ``:name:`` tokens count as emotes too.
EMOTES = frozenset(
    "KEKW LUL LULW OMEGALUL Kappa KappaPride PogChamp Pog POGGERS PogU Poggers monkaS monkaW "
    "PepeHands Sadge BibleThump FeelsBadMan FeelsGoodMan FeelsStrongMan 4Head Jebaited "
    "ResidentSleeper NotLikeThis WutFace Kreygasm TriHard EZ Clap PepeLaugh pepeLaugh COPIUM "
    "Copium catJAM widepeepoHappy peepoHappy peepoSad PauseChamp WeirdChamp KomodoHype "
    "SeemsGood HeyGuys VoHiYo CoolStoryBob DansGame SwiftRage BabyRage TwitchUnity "
    "LuL ICANT Aware Clueless Stare Deadge Prayge Okayge Susge GIGACHAD xdd xqcL "
    "HYPERS ppHop pepeD modCheck Kapp D: <3".split()
)


def emote_rate(text: str, emotes: frozenset[str] = EMOTES) -> float:
    """Share of a message's whitespace tokens that are emotes."""
    words = text.split()
    if not words:
        return 0.0
    hits = sum(1 for w in words if w in emotes or (len(w) > 2 and w[0] == w[-1] == ":"))
    return hits / len(words)


def generated_stats(
    generated: Sequence[str],
    real: Sequence[str],
    train_messages: Sequence[str],
    safety: SafetyFilter | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """How generated messages compare with real chat (protocol, section 7).

    Length (words) and emote-rate distributions against ``real`` (Wasserstein
    distance), distinct-1/2 (real chat on a same-size random sample, since
    distinct-n falls with corpus size), the share copying a training message
    verbatim (after ``dedupe_key`` normalisation) and the share the safety
    filter blocks, with the reasons.
    """
    if not generated or not real:
        raise ValueError("generated_stats needs generated and real messages")
    rng = np.random.default_rng(seed)
    sample = [real[i] for i in rng.permutation(len(real))[: len(generated)]]
    lengths = ([len(t.split()) for t in generated], [len(t.split()) for t in real])
    emotes = ([emote_rate(t) for t in generated], [emote_rate(t) for t in real])
    train_keys = {dedupe_key(m) for m in train_messages}
    out: dict[str, Any] = {
        "n_generated": len(generated),
        "n_real": len(real),
        "length_words": {
            "generated_mean": float(np.mean(lengths[0])),
            "real_mean": float(np.mean(lengths[1])),
            "wasserstein": wasserstein_1d(*lengths),
        },
        "emote_rate": {
            "generated_mean": float(np.mean(emotes[0])),
            "real_mean": float(np.mean(emotes[1])),
            "wasserstein": wasserstein_1d(*emotes),
        },
        "distinct": {
            f"{who}_{n}": distinct_n([t.casefold().split() for t in texts], n)
            for who, texts in (("generated", generated), ("real", sample))
            for n in (1, 2)
        },
        "verbatim_train_copy_share": float(
            np.mean([dedupe_key(t) in train_keys for t in generated])
        ),
        "lengths": {"generated": lengths[0], "real": lengths[1]},
    }
    if safety is not None:
        verdicts = [safety.check(t, now=0.0, reply_to_user=None, recent_chat=()) for t in generated]
        out["blocked_share"] = float(np.mean([not v.allowed for v in verdicts]))
        out["blocked_reasons"] = dict(Counter(v.reason for v in verdicts if not v.allowed))
    return out


__all__ = [
    "KS",
    "METRICS",
    "TieGroup",
    "block_resamples",
    "blocks_of",
    "distinct_n",
    "emote_rate",
    "generated_stats",
    "group_metrics",
    "interval",
    "point_metrics",
    "point_resamples",
    "random_expectation",
    "tie_group",
    "wasserstein_1d",
]
