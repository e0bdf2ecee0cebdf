"""Scoring for the retrain's gate: the serving adapter and the candidate on the same ground.

The gate (``chatling.learn.gate``) compares two adapters, so both must be
measured the same way: ranked on the same held-out candidate sets of the run's
dataset (``held_out_points``, frozen to ``RUN/eval/candidates.json`` so a run
can be re-checked), on the same base model (``base_of``), and with replies
sampled from the same prompts and put through the live safety filter
(``score_adapter``). With ``model.backend=server`` the replies are sampled by
the vLLM server that would serve them, not by transformers in this process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatling.core.errors import ChatlingError
from chatling.core.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT
from chatling.core.settings import Settings
from chatling.learn.gate import AdapterScores

if TYPE_CHECKING:
    from chatling.learn.config import NightlyConfig


def _sample_blocked(
    model: Any, tokenizer: Any, ranker: Any, points: list[Any], safety: Any, n: int, seed: int
) -> tuple[int, int, list[str]]:
    """Sample one reply for each of the first ``n`` points; how many the filter blocks."""
    import torch

    from chatling.training.data.pairs import render_prompt, snapshot_of

    blocked, texts = 0, []
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    for point in points[:n]:
        ids = torch.tensor(
            [ranker.prompt_ids(render_prompt(point.pair, ranker.builder))], device=device
        )
        with torch.inference_mode(), ranker._adapter_state():
            out = model.generate(
                ids,
                do_sample=True,
                temperature=0.9,
                top_p=0.95,
                max_new_tokens=32,
                pad_token_id=tokenizer.eos_token_id,
            )
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
        snap = snapshot_of(point.pair)
        verdict = safety.check(text, now=snap.now, reply_to_user=None, recent_chat=snap.chat)
        blocked += not verdict.allowed
        texts.append(text)
    return blocked, min(n, len(points)), texts


def _sample_blocked_on_server(
    ranker: Any,
    adapter: Path | None,
    points: list[Any],
    safety: Any,
    settings: Settings,
    config: NightlyConfig,
) -> tuple[int, int, list[str]]:
    """``_sample_blocked`` through the configured vLLM server (``model.backend=server``):
    the candidate is loaded there for the sampling and unloaded after, so the gate judges
    the replies of the engine that would serve them. A server on another machine must
    see the run directory at the same path, as for promoted adapters (README)."""
    import asyncio

    from chatling.engine import SamplingOptions
    from chatling.engine_server import sample_texts
    from chatling.training.data.pairs import render_prompt, snapshot_of

    chosen = points[: config.gate_generations]
    prompts = [ranker.prompt_ids(render_prompt(p.pair, ranker.builder)) for p in chosen]
    options = SamplingOptions(n=1, max_tokens=32, temperature=0.9, top_p=0.95, seed=config.seed)
    texts = asyncio.run(sample_texts(settings.model, adapter, prompts, options))
    blocked = 0
    for point, text in zip(chosen, texts, strict=True):
        snap = snapshot_of(point.pair)
        verdict = safety.check(text, now=snap.now, reply_to_user=None, recent_chat=snap.chat)
        blocked += not verdict.allowed
    return blocked, len(chosen), texts


def score_adapter(
    name: str,
    base: str,
    adapter: Path | None,
    points: list[Any],
    settings: Settings,
    config: NightlyConfig,
) -> tuple[AdapterScores, list[str]]:
    """Rank the held-out candidates and sample replies with one adapter (None: base)."""
    from chatling.prompt import PromptBuilder
    from chatling.safety import SafetyFilter
    from chatling.training.eval.evaluate import BootstrapConfig, evaluate
    from chatling.training.eval.rankers import ModelRanker, load_model

    model, tokenizer = load_model(base, str(adapter) if adapter else None)
    builder = PromptBuilder(
        settings.reply, lambda s: len(tokenizer.encode(s, add_special_tokens=False))
    )
    ranker = ModelRanker(model, tokenizer, builder, name=name, batch_size=8 if not _cuda() else 64)
    results = evaluate(points, [ranker], BootstrapConfig(n_boot=10, seed=config.seed))
    summed = results[f"{name} · summed"]
    safety = SafetyFilter.from_settings(settings.reply, PROJECT_ROOT)
    if settings.model.backend == "server":
        blocked, generated, texts = _sample_blocked_on_server(
            ranker, adapter, points, safety, settings, config
        )
    else:
        blocked, generated, texts = _sample_blocked(
            model, tokenizer, ranker, points, safety, config.gate_generations, config.seed
        )
    perplexity = summed.perplexity.value if summed.perplexity else math.inf
    writing = writing_auc([p.pair.target for p in points[:generated]], texts, config.seed)
    scores = AdapterScores(
        name=name,
        per_point={m: summed.per_point[m] for m in ("recall@10", "mrr")},
        perplexity=perplexity,
        blocked=blocked,
        generated=generated,
        writing_auc=writing["mean"],
        writing_auc_std=writing["std"],
    )
    del model
    return scores, texts


MIN_WRITING_SAMPLES = 10


def writing_auc(real: list[str], sampled: list[str], seed: int) -> dict[str, float]:
    """How well the writing classifier tells the sampled replies from the real messages of
    the same points (0.5: it cannot); NaN with fewer than ``MIN_WRITING_SAMPLES`` non-empty
    replies, where five-fold cross-validation has too little to fit on."""
    from chatling.training.eval.writing import classifier_auc

    pairs = [(r, t) for r, t in zip(real, sampled, strict=True) if t.strip() and r.strip()]
    if len(pairs) < MIN_WRITING_SAMPLES:
        return {"mean": math.nan, "std": math.nan}
    auc = classifier_auc([r for r, _ in pairs], [t for _, t in pairs], seed=seed)
    return {"mean": auc["mean"], "std": auc["std"]}


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def held_out_points(data: Path, config: NightlyConfig, report: Path) -> list[Any]:
    """The frozen held-out candidate sets of this run's dataset (written to ``report``)."""
    from chatling.training.data.splits import load_split
    from chatling.training.eval.evaluate import CandidateConfig, build_candidates

    train, test = load_split(data, "time", config.test_fraction)
    sets = build_candidates(
        test, train, CandidateConfig(n_points=config.eval_points, seed=config.seed)
    )
    sets.write(report / "candidates.json")
    if not sets.points:
        raise ChatlingError(f"{data}: no held-out points to evaluate on; more data is needed")
    return list(sets.points)


def base_of(adapter_dir: Path | None, config: NightlyConfig) -> str:
    """The base model both adapters are scored on: the configured one, else the one
    ``adapter_dir`` was trained on, else the packaged default."""
    if config.base_model:
        return config.base_model
    meta = adapter_dir / "chatling_adapter.json" if adapter_dir else None
    if meta is not None and meta.exists():
        base = json.loads(meta.read_text(encoding="utf-8")).get("base_model")
        if base:
            return str(base)
    return str(DEFAULT_MODEL_DIR)


__all__ = ["base_of", "held_out_points", "score_adapter", "writing_auc"]
