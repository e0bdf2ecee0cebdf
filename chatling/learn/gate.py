"""The promotion gate of the nightly retrain: is the new adapter at least as good?

Both adapters are scored on the same frozen held-out points (``chatling.training.eval.evaluate``)
and sample the same prompts through the live safety filter. The candidate is
promoted only if every check passes:

- Recall@10 and MRR (``ranking_required``; else computed and recorded only, since
  an adapter can write more like chat while ranking worse): not worse beyond the
  bootstrap interval. The test is
  paired: the moving-block bootstrap (same blocks for both, as in the
  evaluation) of the per-point difference candidate - current; the candidate
  fails when the whole 95% interval lies below ``-rank_margin``. A paired
  interval is far tighter than comparing two separate intervals, because both
  adapters meet the same hard and easy points; so tight that a few-step
  adapter which moves every score by a hair (MRR -0.0003, interval -0.001 ..
  -0.0003) was called worse, hence the margin: a drop that small is no
  worse a model.
- Perplexity of the real messages: not above the current's by more than
  ``perplexity_margin`` (relative).
- Share of sampled replies the safety filter blocks: not above the current's
  by more than ``blocked_margin`` (absolute).
- How well its sampled replies can be told from the real messages of the same
  points (``writing_required``; else recorded only): the writing classifier's
  ROC AUC (``chatling.training.eval.writing.classifier_auc``, 0.5 = cannot),
  not above the current's by more than ``writing_margin``. Ranking and
  perplexity ask whether the adapter recognises chat; this asks whether what it
  writes reads like chat, the product's own measure. Recorded only by default:
  on few samples the AUC reads low and strays far (SFT b's DougDoug validation
  posts, s.d. over 20 random subsets: 32 posts 0.61 +- 0.08, 64 0.66 +- 0.05,
  128 0.70 +- 0.03, all 195 0.71), so at the default 32 it tells a nightly
  report how the writer moved, not a verdict; ``required`` wants 128 or more.

``decide`` is pure: metrics in, decision and reasons out, so the rule is tested
without a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chatling.training.eval import metrics as em

GATED_METRICS = ("recall@10", "mrr")


@dataclass(frozen=True, slots=True)
class GateOptions:
    ranking_required: bool = True
    rank_margin: float = 0.01
    perplexity_margin: float = 0.02
    blocked_margin: float = 0.05
    writing_required: bool = False
    writing_margin: float = 0.05
    n_boot: int = 1000
    block_s: float = 60.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class AdapterScores:
    """What the gate knows about one adapter, on the shared points."""

    name: str
    per_point: dict[str, np.ndarray]
    """Per held-out point, each metric of ``GATED_METRICS`` (same point order for both)."""
    perplexity: float
    blocked: int
    generated: int
    writing_auc: float = float("nan")
    """Classifier AUC of its sampled replies against the points' real messages (NaN: not
    measured, e.g. too few samples)."""
    writing_auc_std: float = float("nan")

    @property
    def blocked_share(self) -> float:
        return self.blocked / self.generated if self.generated else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "adapter": self.name,
            **{m: float(np.mean(v)) if len(v) else None for m, v in self.per_point.items()},
            "perplexity": self.perplexity,
            "blocked_share": self.blocked_share,
            "generated": self.generated,
            "writing_auc": None if math.isnan(self.writing_auc) else self.writing_auc,
        }


@dataclass(frozen=True, slots=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    """Why not (empty when promoted), one line per failed check."""
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if self.promote:
            return "passed the gate: " + "; ".join(str(v["line"]) for v in self.checks.values())
        return "; ".join(self.reasons)


def decide(
    current: AdapterScores,
    candidate: AdapterScores,
    times: Sequence[float],
    sources: Sequence[str],
    options: GateOptions = GateOptions(),
) -> GateDecision:
    """Promote ``candidate`` over ``current``? See the module docstring."""
    failed: list[str] = []
    checks: dict[str, Any] = {}
    for metric in GATED_METRICS:
        diff = np.asarray(candidate.per_point[metric]) - np.asarray(current.per_point[metric])
        if len(diff) == 0:
            failed.append(f"{metric}: no held-out points to compare on")
            continue
        resamples = em.block_resamples(
            times, sources, options.block_s, options.n_boot, options.seed
        )
        low, high = em.interval(lambda idx, d=diff: float(d[idx].mean()), resamples)
        mean = float(diff.mean())
        worse = high < -options.rank_margin
        line = f"{metric} {mean:+.3f} (95% CI {low:+.3f} .. {high:+.3f})"
        if not options.ranking_required:
            line += " (reported, not gating)"
        checks[metric] = {
            "diff": mean,
            "ci95": [low, high],
            "passed": not worse,
            "gating": options.ranking_required,
            "line": line,
        }
        if worse and options.ranking_required:
            failed.append(f"{metric} worse: {line}")
    limit = current.perplexity * (1.0 + options.perplexity_margin)
    ok = candidate.perplexity <= limit
    line = f"perplexity {candidate.perplexity:.2f} vs {current.perplexity:.2f}"
    checks["perplexity"] = {
        "candidate": candidate.perplexity,
        "current": current.perplexity,
        "limit": limit,
        "passed": ok,
        "line": line,
    }
    if not ok:
        failed.append(f"perplexity worse: {line} (limit {limit:.2f})")
    limit = current.blocked_share + options.blocked_margin
    ok = candidate.blocked_share <= limit
    line = (
        f"blocked {candidate.blocked}/{candidate.generated} vs "
        f"{current.blocked}/{current.generated}"
    )
    checks["blocked_share"] = {
        "candidate": candidate.blocked_share,
        "current": current.blocked_share,
        "passed": ok,
        "line": line,
    }
    if not ok:
        failed.append(f"more replies blocked: {line}")
    writing = _writing_check(current, candidate, options)
    checks["writing_auc"] = writing
    if not writing["passed"] and writing["gating"]:
        failed.append(f"writes less like chat: {writing['line']} (limit {writing['limit']:.3f})")
    return GateDecision(not failed, tuple(failed), checks)


def _writing_check(
    current: AdapterScores, candidate: AdapterScores, options: GateOptions
) -> dict[str, Any]:
    """The writing check's record; unmeasured on either side, it passes and says so."""
    cand, cur = candidate.writing_auc, current.writing_auc
    if math.isnan(cand) or math.isnan(cur):
        return {
            "candidate": None if math.isnan(cand) else cand,
            "current": None if math.isnan(cur) else cur,
            "passed": True,
            "gating": False,
            "limit": None,
            "line": "writing AUC not measured (too few sampled replies)",
        }
    limit = cur + options.writing_margin
    line = (
        f"writing AUC {cand:.3f} ± {candidate.writing_auc_std:.3f} vs "
        f"{cur:.3f} ± {current.writing_auc_std:.3f} (0.5: reads as chat)"
    )
    if not options.writing_required:
        line += " (reported, not gating)"
    return {
        "candidate": cand,
        "current": cur,
        "limit": limit,
        "passed": cand <= limit,
        "gating": options.writing_required,
        "line": line,
    }


__all__ = ["GATED_METRICS", "AdapterScores", "GateDecision", "GateOptions", "decide"]
