"""Ranking evaluation on held-out stream time (docs/evaluation-protocol.md).

A **test point** is a moment ``t`` just before a held-out message: its input is
that message's context (transcript + recent chat, as the live bot saw it), its
ground truth the distinct real messages posted in ``(t, t + window_s]``.
Points are at least ``window_s`` apart so ground-truth windows never overlap.
Each point gets ``n_candidates`` (100) candidates: its ground truths (at most
``max_truth`` = 5, the first ones in time: busy chat posts 20 messages in 5 s,
and the protocol's reference numbers assume about 5 among 100), the 20 most
frequent training messages, the 20 training messages nearest by TF-IDF to the
ground truth, and random training messages to fill, shuffled. A training
message equal (after ``chatling.safety.dedupe_key`` normalisation) to any message
of the window is never a distractor, so only messages really posted in the
window are flagged as correct, and no message posted there is flagged wrong.
The sets are frozen to a seeded JSON file and every system is scored on the
same sets.

``evaluate`` runs rankers (``chatling.training.eval.rankers``) over the points and gives,
per system, Recall@1/5/10, mean rank and MRR of the best-ranked ground truth
(ties counted in expectation, see ``chatling.training.eval.metrics``) with 95%
intervals from a bootstrap over points and a moving-block bootstrap, and the
perplexity of the ground-truth messages for language models.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chatling.core.errors import InputFileError
from chatling.safety import dedupe_key
from chatling.training.data.pairs import Pair
from chatling.training.eval import metrics as em
from chatling.training.eval.points import TestPoint
from chatling.training.eval.rankers import CandidateScores, Ranker, TfIdf, TfIdfIndex

log = logging.getLogger(__name__)

FORMAT = "chatling-candidates/1"
T_EPS = 1e-6
"""A point's moment ``t`` is this much before its anchor message."""


@dataclass(frozen=True, slots=True)
class CandidateConfig:
    """How candidate sets are built (saved in the JSON file with them)."""

    n_points: int = 500
    seed: int = 0
    n_candidates: int = 100
    n_frequent: int = 20
    n_similar: int = 20
    window_s: float = 5.0
    max_truth: int = 5


@dataclass(frozen=True, slots=True)
class CandidateSets:
    config: CandidateConfig
    points: tuple[TestPoint, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": vars_of(self.config),
            "points": [p.to_json() for p in self.points],
        }

    def write(self, path: Path) -> str:
        """Write atomically; returns the file's sha256."""
        text = json.dumps(self.to_json(), ensure_ascii=False, indent=1)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path: Path) -> tuple[CandidateSets, str]:
        """Read and check a frozen candidate file; returns it and its sha256."""
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise InputFileError(path, None, f"cannot read the candidate sets ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputFileError(path, None, f"not a {FORMAT} file: build one with chatling eval")
        try:
            config = CandidateConfig(**data["config"])
            points = tuple(TestPoint.from_json(p) for p in data["points"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, None, f"malformed candidate sets ({exc})") from None
        for p in points:
            flags_ok = all(t == (o == "truth") for t, o in zip(p.truth, p.origins, strict=True))
            if not any(p.truth) or not flags_ok:
                raise InputFileError(path, f"point {p.id}", "ground-truth flags are inconsistent")
        return cls(config, points), hashlib.sha256(raw).hexdigest()


def vars_of(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}


# --- test points and candidates ----------------------------------------------------------


def _by_source(pairs: Sequence[Pair]) -> dict[str, list[Pair]]:
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        if dedupe_key(p.target):
            groups.setdefault(p.source, []).append(p)
    return {s: sorted(g, key=lambda p: p.offset) for s, g in sorted(groups.items())}


def select_points(
    test: Sequence[Pair], config: CandidateConfig, spacing_s: float | None = None
) -> list[tuple[Pair, list[str]]]:
    """(anchor, the distinct messages of its window in time order) for sampled moments.

    Anchors are at least ``spacing_s`` apart (default: the window, so windows never
    overlap, as ranking wants; ``chatling generate`` takes more, closer moments).
    """
    spacing = config.window_s if spacing_s is None else spacing_s
    streams = _by_source(test)
    offsets = {s: [p.offset for p in pairs] for s, pairs in streams.items()}
    anchors: list[Pair] = []
    for pairs in streams.values():
        last = -math.inf
        for p in pairs:
            if p.offset >= last + spacing:
                anchors.append(p)
                last = p.offset
    rng = np.random.default_rng(config.seed)
    out = []
    for i in sorted(rng.permutation(len(anchors))[: config.n_points]):
        anchor = anchors[i]
        pairs, times = streams[anchor.source], offsets[anchor.source]
        t = anchor.offset - T_EPS
        lo = bisect.bisect_right(times, t)
        hi = bisect.bisect_right(times, t + config.window_s)
        truths: dict[str, str] = {}
        for p in pairs[lo:hi]:
            truths.setdefault(dedupe_key(p.target), p.target.strip())
        out.append((anchor, list(truths.values())))
    return out


@dataclass
class CandidatePool:
    """Distinct training messages (by normalised key), their counts and a TF-IDF index."""

    texts: list[str]
    keys: list[str]
    counts: np.ndarray
    index: TfIdfIndex = field(repr=False)

    @classmethod
    def from_messages(cls, messages: Sequence[str]) -> CandidatePool:
        first: dict[str, str] = {}
        counts: Counter[str] = Counter()
        for m in messages:
            key = dedupe_key(m)
            if key:
                first.setdefault(key, m.strip())
                counts[key] += 1
        keys = list(first)
        texts = [first[k] for k in keys]
        return cls(
            texts, keys, np.asarray([counts[k] for k in keys]), TfIdfIndex(TfIdf(texts), texts)
        )

    def frequent_order(self) -> np.ndarray:
        return np.argsort(-self.counts, kind="stable")


def _take(
    chosen: list[tuple[str, str]], taken: set[str], pool: CandidatePool,
    order: Sequence[int], limit: int, origin: str, size: int,
) -> None:  # fmt: skip
    """Append up to ``limit`` pool messages in ``order`` that are not taken yet."""
    added = 0
    for j in order:
        if added >= limit or len(chosen) >= size:
            return
        if pool.keys[j] not in taken:
            taken.add(pool.keys[j])
            chosen.append((pool.texts[j], origin))
            added += 1


def build_candidates(
    test: Sequence[Pair], train: Sequence[Pair], config: CandidateConfig
) -> CandidateSets:
    """Seeded, reproducible candidate sets for test points (see the module docstring)."""
    pool = CandidatePool.from_messages([p.target for p in train])
    frequent = pool.frequent_order()
    size = config.n_candidates
    points = []
    for idx, (anchor, window) in enumerate(select_points(test, config)):
        rng = np.random.default_rng([config.seed, idx])
        truths = window[: config.max_truth]
        chosen = [(t, "truth") for t in truths]
        # Messages of the window beyond the cap are neither truths nor distractors.
        taken = {dedupe_key(t) for t in window}
        _take(chosen, taken, pool, frequent, config.n_frequent, "frequent", size)
        sims = np.max([pool.index.similarities(t) for t in truths], axis=0)
        similar = np.flatnonzero(sims > 0)
        nearest = similar[np.argsort(-sims[similar], kind="stable")]
        _take(chosen, taken, pool, nearest, config.n_similar, "similar", size)
        if len(pool.texts) <= 20 * size:  # small pool: one pass over all of it
            _take(chosen, taken, pool, rng.permutation(len(pool.texts)), size, "random", size)
        while len(chosen) < size and len(pool.texts) > 20 * size:  # large: never runs dry
            _take(chosen, taken, pool, rng.integers(0, len(pool.texts), 256), size, "random", size)
        order = rng.permutation(len(chosen))
        points.append(
            TestPoint(
                id=idx,
                source=anchor.source,
                t=anchor.offset - T_EPS,
                pair=anchor,
                candidates=tuple(chosen[i][0] for i in order),
                truth=tuple(chosen[i][1] == "truth" for i in order),
                origins=tuple(chosen[i][1] for i in order),
                n_truth_window=len(window),
            )
        )
    log.info("built candidate sets for %d test points", len(points))
    return CandidateSets(config, tuple(points))


# --- scoring and metrics --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    ci_points: tuple[float, float]
    ci_blocks: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci95_points": list(self.ci_points),
            "ci95_blocks": list(self.ci_blocks),
        }


@dataclass
class SystemResult:
    name: str
    ranker: str
    per_point: dict[str, np.ndarray]
    estimates: dict[str, Estimate]
    perplexity: Estimate | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ranker": self.ranker,
            "metrics": {m: e.to_json() for m, e in self.estimates.items()},
            "perplexity": self.perplexity.to_json() if self.perplexity else None,
            "seconds": self.seconds,
        }


@dataclass(frozen=True, slots=True)
class BootstrapConfig:
    n_boot: int = 1000
    block_s: float = 60.0
    seed: int = 0
    ties: str = "expected"


def _estimate(
    stat: Any, n: int, times: Sequence[float], sources: Sequence[str], boot: BootstrapConfig
) -> Estimate:
    return Estimate(
        float(stat(np.arange(n))),
        em.interval(stat, em.point_resamples(n, boot.n_boot, boot.seed)),
        em.interval(stat, em.block_resamples(times, sources, boot.block_s, boot.n_boot, boot.seed)),
    )


def summarise(
    points: Sequence[TestPoint],
    name: str,
    ranker: str,
    scores: Sequence[np.ndarray],
    boot: BootstrapConfig,
    logprob: Sequence[CandidateScores] | None = None,
) -> SystemResult:
    """Metrics with intervals for one system's scores (one array per point)."""
    rows = [
        em.point_metrics(s, np.asarray(p.truth), ties=boot.ties)
        for p, s in zip(points, scores, strict=True)
    ]
    per_point = {m: np.asarray([r[m] for r in rows]) for m in em.METRICS}
    times, sources = [p.t for p in points], [p.source for p in points]
    n = len(points)
    estimates = {
        m: _estimate(lambda idx, v=v: v[idx].mean(), n, times, sources, boot)
        for m, v in per_point.items()
    }
    perplexity = None
    if logprob is not None:
        lp = np.asarray(
            [c.logprob[np.asarray(p.truth)].sum() for c, p in zip(logprob, points, strict=True)]
        )
        nt = np.asarray(
            [c.n_tokens[np.asarray(p.truth)].sum() for c, p in zip(logprob, points, strict=True)]
        )
        perplexity = _estimate(
            lambda idx: math.exp(-lp[idx].sum() / nt[idx].sum()), n, times, sources, boot
        )
    return SystemResult(name, ranker, per_point, estimates, perplexity)


def evaluate(
    points: Sequence[TestPoint],
    rankers: Sequence[Ranker],
    boot: BootstrapConfig = BootstrapConfig(),
) -> dict[str, SystemResult]:
    """Score every point with every ranker; one ``SystemResult`` per ranker variant."""
    results: dict[str, SystemResult] = {}
    for ranker in rankers:
        start = time.perf_counter()
        scored: list[CandidateScores] = []
        for i, point in enumerate(points):
            scored.append(ranker.score(point))
            if (i + 1) % 50 == 0:
                log.info("%s: %d/%d points", ranker.name, i + 1, len(points))
        seconds = time.perf_counter() - start
        has_lm = scored[0].logprob is not None if scored else False
        for variant in scored[0].scores if scored else ():
            name = f"{ranker.name} · {variant}" if variant else ranker.name
            res = summarise(
                points, name, ranker.name, [s.scores[variant] for s in scored], boot,
                scored if has_lm else None,
            )  # fmt: skip
            res.seconds = seconds
            results[name] = res
        log.info("%s: %d points in %.1f s", ranker.name, len(points), seconds)
    return results


PAIRED_METRICS = ("recall@10", "mrr")
PAIRINGS = (
    ("fine-tuned", "base model", "fine-tuning"),
    ("fine-tuned", "fine-tuned, no transcript", "transcript (fine-tuned)"),
    ("base model", "base model, no transcript", "transcript (base)"),
)
"""(system, reference, what the difference measures), per scoring variant."""


def paired_differences(
    points: Sequence[TestPoint],
    results: dict[str, SystemResult],
    boot: BootstrapConfig,
    metrics: Sequence[str] = PAIRED_METRICS,
) -> list[dict[str, Any]]:
    """System minus reference on the same points, with a paired moving-block interval.

    Separate intervals of two systems overlap far more often than their paired
    difference crosses 0 (both see the same hard and easy points), so a claim
    "A beats B" is read off this interval: A is better when all of it is above 0.
    """
    times, sources = [p.t for p in points], [p.source for p in points]
    out = []
    for system, reference, what in PAIRINGS:
        for name, res in results.items():
            if res.ranker != system:
                continue
            variant = name[len(system) :].removeprefix(" · ")
            ref_name = f"{reference} · {variant}" if variant else reference
            if ref_name not in results:
                continue
            row: dict[str, Any] = {"what": what, "system": name, "reference": ref_name}
            for metric in metrics:
                diff = res.per_point[metric] - results[ref_name].per_point[metric]
                est = _estimate(
                    lambda idx, d=diff: float(d[idx].mean()), len(diff), times, sources, boot
                )
                row[metric] = est.to_json()
            out.append(row)
    return out


def random_expectation_mean(points: Sequence[TestPoint]) -> dict[str, float]:
    """Analytic random baseline averaged over points (each with its own N and truths)."""
    rows = [em.random_expectation(len(p.candidates), sum(p.truth)) for p in points]
    return {m: float(np.mean([r[m] for r in rows])) for m in em.METRICS}


def split_summary(train: Sequence[Pair], test: Sequence[Pair]) -> dict[str, Any]:
    """How train and test were split, and how much of test is in train verbatim."""

    def describe(pairs: Sequence[Pair]) -> dict[str, Any]:
        spans: dict[str, list[float]] = {}
        for p in pairs:
            lo_hi = spans.setdefault(p.source, [p.offset, p.offset])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], p.offset), max(lo_hi[1], p.offset)
        return {"pairs": len(pairs), "sources": spans}

    tr, te = describe(train), describe(test)
    shared = set(tr["sources"]) & set(te["sources"])
    if not shared:
        kind = "whole sources"
    elif all(
        tr["sources"][s][1] <= te["sources"][s][0] or te["sources"][s][1] <= tr["sources"][s][0]
        for s in shared
    ):
        kind = "by time within sources"
    else:
        kind = "interleaved in time (not a clean split: expect optimistic numbers)"
        log.warning("train and test interleave in time within %s", sorted(shared))
    train_keys = {dedupe_key(p.target) for p in train}
    test_keys = [dedupe_key(p.target) for p in test]
    overlap = sum(k in train_keys for k in test_keys) / len(test_keys) if test_keys else 0.0
    return {"kind": kind, "train": tr, "test": te, "test_messages_seen_in_train": overlap}


__all__ = [
    "BootstrapConfig",
    "CandidateConfig",
    "CandidatePool",
    "CandidateSets",
    "Estimate",
    "SystemResult",
    "TestPoint",
    "build_candidates",
    "evaluate",
    "random_expectation_mean",
    "select_points",
    "split_summary",
    "summarise",
]
