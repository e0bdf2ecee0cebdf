"""``chatling eval``: score a model and the baselines on frozen candidate sets, write a report.

    chatling eval --data DIR [--adapter DIR] [--base MODEL] --report DIR [--points N] [--seed S]
                  [--candidates FILE] [--generated FILE] [--trainer-log FILE] [--no-model]

DIR is a pairs dataset (``chatling data ingest --out DIR``), split with
``--split time|source`` and ``--test-fraction`` exactly as
``chatling.training.data.dataset.split_pairs`` does, or a directory of already split files
(``train*`` and ``test*``/``eval*``/``val*``/``dev*``, ``.parquet`` or
``.jsonl``). The candidate sets are built from them with the
seed and frozen to ``REPORT/candidates.json``, or read from ``--candidates``
so that every model is scored on the same sets. Systems: the random
expectation, frequency, TF-IDF to recent chat and to transcript, the base
model with and without the transcript and, with ``--adapter``, the fine-tuned
model with and without the transcript (model scores summed and per token).
Writes ``report.json``, ``report.md``, ``report.html`` and PNG plots into REPORT
and prints the ranking table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatling.cli.common import setup_logging
from chatling.core.errors import InputFileError
from chatling.training.data.pairs import Pair
from chatling.training.data.splits import load_split
from chatling.training.eval import metrics as em
from chatling.training.eval.evaluate import (
    BootstrapConfig,
    CandidateConfig,
    CandidateSets,
    build_candidates,
    evaluate,
    paired_differences,
    random_expectation_mean,
    split_summary,
    vars_of,
)
from chatling.training.eval.writing import is_generate_file, read_moments, writing_metrics

log = logging.getLogger(__name__)

TIES_NOTE = {
    "expected": "counted in expectation over a uniformly random order inside each tie group "
    "(exact, not sampled; a ranker whose scores all tie equals a random ranking).",
    "pessimistic": "pessimistic: ground truths are placed last inside their tie group.",
}


def read_generated(path: Path) -> list[str]:
    """Generated messages: one per line, or JSONL objects with a ``text`` field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, None, f"cannot read generated messages ({exc})") from None
    if path.suffix == ".jsonl":
        return [str(json.loads(x)["text"]) for x in lines if x.strip()]
    return [x.strip() for x in lines if x.strip()]


def read_loss_curve(path: Path) -> list[list[float]]:
    """(step, loss) from ``chatling_adapter.json`` or a HF ``trainer_state.json``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(path, None, f"cannot read the trainer log ({exc})") from None
    if "loss_curve" in data:
        return [[float(s), float(v)] for s, v in data["loss_curve"]]
    history = data.get("log_history", [])
    return [[float(e["step"]), float(e["loss"])] for e in history if "loss" in e and "step" in e]


def _model_rankers(args: argparse.Namespace) -> list[Any]:
    from chatling.core.paths import DEFAULT_MODEL_DIR
    from chatling.core.settings import load_settings
    from chatling.prompt import PromptBuilder
    from chatling.training.eval.rankers import ModelRanker, load_model

    base = args.base
    meta = Path(args.adapter) / "chatling_adapter.json" if args.adapter else None
    if base is None and meta is not None and meta.exists():
        base = json.loads(meta.read_text(encoding="utf-8")).get("base_model")
    base = base or str(DEFAULT_MODEL_DIR)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(base, args.adapter, args.device, args.dtype)
    on_cpu = next(model.parameters()).device.type == "cpu"
    # Measured: on 2 CPU cores batches of 8 are fastest (1.5 s a point, bf16; 100 at once
    # is 5x slower: the prompt's KV copies fall out of cache); on a GPU, one batch of all.
    batch_size = args.batch_size or (8 if on_cpu else 128)
    settings = load_settings(getattr(args, "env_file", ".env"))
    builder = PromptBuilder(
        settings.reply, lambda s: len(tokenizer.encode(s, add_special_tokens=False))
    )

    def ranker(name: str, transcript: bool, adapter: bool) -> ModelRanker:
        return ModelRanker(
            model, tokenizer, builder, name=name, with_transcript=transcript,
            adapter_enabled=adapter, batch_size=batch_size, pmi=args.pmi,
        )  # fmt: skip

    rankers = [ranker("base model", True, False), ranker("base model, no transcript", False, False)]
    if args.adapter:
        rankers += [
            ranker("fine-tuned", True, True),
            ranker("fine-tuned, no transcript", False, True),
        ]
    return rankers


def _candidates(
    args: argparse.Namespace, report: Path, train: list[Pair], test: list[Pair]
) -> tuple[CandidateSets, str]:
    target = report / "candidates.json"
    if args.candidates:
        source = Path(args.candidates)
        sets, digest = CandidateSets.load(source)
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        return sets, digest
    config = CandidateConfig(
        n_points=args.points,
        seed=args.seed,
        n_candidates=args.n_candidates,
        max_truth=args.max_truth,
    )
    sets = build_candidates(test, train, config)
    return sets, sets.write(target)


def run_eval(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings
    from chatling.safety import SafetyFilter
    from chatling.training.eval.rankers import FrequencyRanker, RandomRanker, TfIdf, TfIdfRanker
    from chatling.training.eval.report import write_report

    setup_logging(args.verbose)
    train, test = load_split(Path(args.data), args.split, args.test_fraction)
    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    sets, digest = _candidates(args, report, train, test)
    points = sets.points
    train_messages = [p.target for p in train]
    tfidf = TfIdf(train_messages)
    rankers: list[Any] = [
        RandomRanker(),
        FrequencyRanker.from_messages(train_messages),
        TfIdfRanker(tfidf, "chat"),
        TfIdfRanker(tfidf, "transcript"),
    ]
    if not args.no_model:
        rankers += _model_rankers(args)
    boot = BootstrapConfig(
        n_boot=args.bootstrap, block_s=args.block_s, seed=args.seed, ties=args.ties
    )
    started = time.perf_counter()
    results = evaluate(points, rankers, boot)
    speed = {}
    for name, res in results.items():
        if res.perplexity is not None and name.endswith("summed") and points:
            n_cands = sum(len(p.candidates) for p in points)
            speed[f"{res.ranker}: candidates/s"] = round(n_cands / res.seconds, 1)
            speed[f"{res.ranker}: s/point"] = round(res.seconds / len(points), 3)
    speed["total scoring s"] = round(time.perf_counter() - started, 1)
    data: dict[str, Any] = {
        "title": "chatling evaluation",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "split": split_summary(train, test),
        "candidates": {
            "path": "candidates.json",
            "sha256": digest,
            "points": len(points),
            **vars_of(sets.config),
            "mean_truth": sum(sum(p.truth) for p in points) / max(1, len(points)),
        },
        "ties": TIES_NOTE[args.ties],
        "bootstrap": {"n_boot": boot.n_boot, "block_s": boot.block_s, "seed": boot.seed},
        "random_expectation": random_expectation_mean(points) if points else {},
        "systems": {name: res.to_json() for name, res in results.items()},
        "paired": paired_differences(points, results, boot),
        "speed": speed,
        "generated": None,
        "loss_curve": None,
    }
    data["writing"] = None
    if args.generated and is_generate_file(Path(args.generated)):
        # A `chatling generate` file: what the live bot would post at held-out moments.
        moments = read_moments(Path(args.generated))
        data["writing"] = writing_metrics(moments, train_messages, seed=args.seed)
        data["generated"] = em.generated_stats(
            [m.chosen for m in moments if m.chosen],
            [p.target for p in test],
            train_messages,
            seed=args.seed,
        )
    elif args.generated:
        safety = SafetyFilter.from_settings(load_settings(getattr(args, "env_file", ".env")).reply)
        real = [p.target for p in test]
        data["generated"] = em.generated_stats(
            read_generated(Path(args.generated)), real, train_messages, safety, seed=args.seed
        )
    log_file = args.trainer_log or (
        Path(args.adapter) / "chatling_adapter.json" if args.adapter else None
    )
    if log_file and Path(log_file).exists():
        data["loss_curve"] = read_loss_curve(Path(log_file))
    write_report(report, data)
    _print_table(data)
    print(f"report: {report / 'report.html'}")
    return 0


def _print_table(data: dict[str, Any]) -> None:
    width = max(len(n) for n in data["systems"]) if data["systems"] else 10
    print(f"{'system':<{width}}  {'R@1':>6} {'R@5':>6} {'R@10':>6} {'rank':>6} {'MRR':>6}")
    for name, sys_ in data["systems"].items():
        m = sys_["metrics"]
        r1, r5, r10 = (m[f"recall@{k}"]["value"] for k in (1, 5, 10))
        rank, mrr = m["mean_rank"]["value"], m["mrr"]["value"]
        print(f"{name:<{width}}  {r1:6.3f} {r5:6.3f} {r10:6.3f} {rank:6.1f} {mrr:6.3f}")


def add_eval_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``chatling eval`` on the CLI's subparsers."""
    ep = subparsers.add_parser(
        "eval",
        help="rank real chat messages among distractors: the model against baselines",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ep.add_argument("--data", required=True, help="pairs dataset, or train*/test* pair files")
    ep.add_argument("--report", required=True, help="directory for the report (created)")
    ep.add_argument("--adapter", default=None, help="LoRA adapter directory (peft) to evaluate")
    ep.add_argument(
        "--base", default=None, help="base model directory or HF id (default: packaged)"
    )
    ep.add_argument("--points", type=int, default=500, help="test points (default 500)")
    ep.add_argument("--seed", type=int, default=0, help="seed of points, candidates, bootstrap")
    ep.add_argument("--split", choices=("time", "source"), default="time", help="how to hold out")
    ep.add_argument("--test-fraction", type=float, default=0.1, help="held-out share (0.1)")
    ep.add_argument("--n-candidates", type=int, default=100, help="candidates per point (100)")
    ep.add_argument("--max-truth", type=int, default=5, help="ground truths kept per point (5)")
    ep.add_argument("--candidates", default=None, help="reuse frozen candidate sets (JSON)")
    ep.add_argument(
        "--generated",
        default=None,
        help="`chatling generate` output (what the bot would post; full writing metrics), "
        "or generated messages (.txt lines or .jsonl with `text`)",
    )
    ep.add_argument(
        "--trainer-log", default=None, help="chatling_adapter.json or trainer_state.json"
    )
    ep.add_argument("--no-model", action="store_true", help="baselines only (no language model)")
    ep.add_argument(
        "--pmi",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also rank models by log p(c|context) - log p(c|no context) (default on)",
    )
    ep.add_argument(
        "--batch-size", type=int, default=None, help="candidates per forward pass (CPU 8, GPU 128)"
    )
    ep.add_argument("--dtype", default="bfloat16", help="bfloat16 (as served) or float32")
    ep.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's; 1 on a busy box)"
    )
    ep.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    ep.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ep.add_argument("--block-s", type=float, default=60.0, help="moving-block length, stream s")
    ep.add_argument("--ties", choices=sorted(TIES_NOTE), default="expected", help="tie handling")
    ep.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ep.set_defaults(func=run_eval)
    return ep


__all__ = [
    "add_eval_command",
    "read_generated",
    "read_loss_curve",
    "run_eval",
]
