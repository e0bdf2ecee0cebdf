"""The nightly retrain: export -> train -> (DPO) -> evaluate -> gate -> promote.

One run, from ``chatling retrain --now`` or the scheduler inside ``chatling
run`` (which starts ``python -m chatling.learn.nightly`` as a child at low CPU
priority, so the bot keeps chatting):

1. **export**: pairs from the SQLite log of every stream active since the run
   that produced the serving adapter (all of it when none did), plus the
   dataset that adapter was trained on (or ``schedule.base_data``), so nothing
   learnt is forgotten. A live stream exported again replaces its older copy.
2. **train**: ``python -m chatling.cli.train`` in a child process (its own
   address space: an out-of-memory kill or a crash takes only the trainer
   down), with ``nice`` and a thread cap; its log goes to ``RUN/train.log``.
3. **dpo**: with at least ``min_preference_pairs`` moderator-marked pairs, a
   preference step on top of the SFT adapter; else skipped with a log line.
4. **evaluate**: the candidate and the serving adapter (or the base model) on
   the same held-out points of the same dataset (frozen to
   ``RUN/eval/candidates.json``), plus sampled replies through the safety filter.
5. **gate**: ``chatling.learn.gate.decide``; **promote** only if it passes.

Every run is a ``training_runs`` row from start to decision. Promotion stores
the adapter as a new version (``chatling.learn.registry``), records the version in the
row (committed), then in one transaction marks the row promoted and replaces
the pointer file; a crash between the two is repaired by the next run, which
finds its row ``running`` with the pointer already on its version. Any other
row left ``running`` by a killed process is closed as ``failed``. Runs are
serialised by an exclusive lock on ``RUNS_DIR/.lock``; a second one is skipped.

This module is the sequence and what it records; the work of each step lives
in a module with that one job: ``chatling.learn.export`` (the dataset),
``chatling.learn.children`` (the trainer process; memory per step),
``chatling.learn.scoring`` (held-out points, both adapters' scores),
``chatling.learn.gate``, ``chatling.learn.registry``, ``chatling.learn.lock``
(one run at a time) and ``chatling.store.runlog`` (the ``training_runs`` rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatling.core.errors import ChatlingError
from chatling.core.logs import setup_logging
from chatling.core.settings import Settings, load_settings
from chatling.learn.children import PeakSampler, train_candidate
from chatling.learn.config import NightlyConfig
from chatling.learn.export import copy_base_data, export_pairs
from chatling.learn.gate import GateDecision, decide
from chatling.learn.lock import run_lock
from chatling.learn.registry import AdapterRegistry, write_json_atomic
from chatling.learn.scoring import base_of, held_out_points, score_adapter
from chatling.store.runlog import RunLog

log = logging.getLogger(__name__)

STEPS = ("export", "train", "dpo", "evaluate", "gate")


class RunStopped(ChatlingError):
    """The run was asked to stop (SIGTERM, Ctrl-C)."""


@dataclass(slots=True)
class StepRecord:
    """How one step went: its time, its memory and a line of detail (``summary.json``)."""

    name: str
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    """Peak resident memory of this process and its children during the step."""
    detail: str = ""


@dataclass(slots=True)
class RunOutcome:
    """What a run ended with; ``run_id`` is None for a run skipped before it had a row."""

    run_id: int | None
    status: str
    reason: str
    candidate_version: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


@contextlib.contextmanager
def _step(
    outcome: RunOutcome, name: str, on_step: Callable[[str, str], None]
) -> Iterator[StepRecord]:
    record = StepRecord(name)
    on_step(name, "start")
    started = time.perf_counter()
    with PeakSampler() as sampler:
        try:
            yield record
        finally:
            record.seconds = round(time.perf_counter() - started, 2)
    record.peak_rss_mib = round(sampler.peak_bytes / 2**20, 1)
    outcome.steps.append(record)
    on_step(name, f"done in {record.seconds:.1f} s{': ' + record.detail if record.detail else ''}")


def _noop(step: str, state: str) -> None:
    log.info("retrain %s: %s", step, state)


def run_nightly(
    config: NightlyConfig,
    settings: Settings,
    *,
    on_step: Callable[[str, str], None] = _noop,
) -> RunOutcome:
    """One complete run; see the module docstring. Never raises for a failed run:
    the outcome (and the row) says ``failed`` with the error."""
    registry = AdapterRegistry(config.adapters_dir)
    with run_lock(config.runs_dir) as got:
        if not got:
            reason = f"another retrain holds {config.runs_dir / '.lock'}"
            log.warning("retrain skipped: %s", reason)
            return RunOutcome(None, "skipped", reason)
        runs = RunLog(config.db_path)
        try:
            runs.reconcile(registry.pointer().version)
            return _run(config, settings, registry, runs, on_step)
        finally:
            runs.close()


def _run(
    config: NightlyConfig,
    settings: Settings,
    registry: AdapterRegistry,
    runs: RunLog,
    on_step: Callable[[str, str], None],
) -> RunOutcome:
    current = registry.active()
    run_id = runs.start(config.trigger, current.name if current else None)
    run_dir = config.runs_dir / f"run-{run_id:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    outcome = RunOutcome(run_id, "running", "", run_dir=run_dir)
    serving = current.name if current else "the base model"
    log.info("retrain run %d in %s (serving: %s)", run_id, run_dir, serving)
    try:
        _steps(config, settings, registry, runs, outcome, current, on_step)
    except (Exception, KeyboardInterrupt, RunStopped) as exc:
        stopped = isinstance(exc, KeyboardInterrupt | RunStopped)
        outcome.status = "failed"
        outcome.reason = "stopped" if stopped else f"{type(exc).__name__}: {exc}"
        runs.finish(run_id, "failed", outcome.reason, error=str(exc) or type(exc).__name__)
        log.error("retrain run %d failed: %s; the serving adapter stays", run_id, outcome.reason)
        if not isinstance(exc, ChatlingError | KeyboardInterrupt | RunStopped):
            log.debug("traceback", exc_info=exc)
    _write_summary(outcome)
    return outcome


def _steps(
    config: NightlyConfig,
    settings: Settings,
    registry: AdapterRegistry,
    runs: RunLog,
    outcome: RunOutcome,
    current: Any,
    on_step: Callable[[str, str], None],
) -> None:
    assert outcome.run_id is not None and outcome.run_dir is not None
    run_id, run_dir = outcome.run_id, outcome.run_dir
    data = run_dir / "data"
    since = runs.since_for(current.name if current else None)
    runs.update(run_id, since_at=since)

    with _step(outcome, "export", on_step) as step:
        new_pairs, new_sources = export_pairs(config.db_path, since, settings, data)
        base_dir = config.base_data
        if base_dir is None and current is not None:
            path = current.metadata.get("dataset", {}).get("path")
            base_dir = Path(path) if path else None
        base_pairs = 0
        if base_dir is not None and (base_dir / "manifest.json").exists():
            base_pairs = copy_base_data(base_dir, data, set(new_sources))
        elif base_dir is not None:
            log.warning("base dataset %s is gone; training on the logs alone", base_dir)
        step.detail = f"{new_pairs} new pairs, {base_pairs} from {base_dir or 'no base dataset'}"
        runs.update(run_id, new_pairs=new_pairs, base_pairs=base_pairs)
    if new_pairs < config.min_new_pairs:
        outcome.status = "skipped"
        outcome.reason = (
            f"{new_pairs} new pairs since the last promotion (< {config.min_new_pairs})"
        )
        runs.finish(run_id, "skipped", outcome.reason)
        log.info("retrain run %d skipped: %s", run_id, outcome.reason)
        return

    sft = run_dir / "sft"
    with _step(outcome, "train", on_step) as step:
        train_candidate(config, data, sft, run_dir / "train.log")
        meta = json.loads((sft / "chatling_adapter.json").read_text(encoding="utf-8"))
        step.detail = f"{meta.get('global_step')} steps, final loss {meta.get('final_loss')}"
    candidate_dir = sft

    with _step(outcome, "dpo", on_step) as step:
        candidate_dir, n_prefs = _maybe_dpo(config, settings, sft, run_dir, step)
        runs.update(run_id, preference_pairs=n_prefs)

    report = run_dir / "eval"
    report.mkdir(exist_ok=True)
    with _step(outcome, "evaluate", on_step) as step:
        points = held_out_points(data, config, report)
        base = base_of(candidate_dir, config)
        current_scores, current_texts = score_adapter(
            current.name if current else "base model",
            base,
            current.path if current else None,
            points,
            settings,
            config,
        )
        cand_scores, cand_texts = score_adapter(
            "candidate", base, candidate_dir, points, settings, config
        )
        (report / "generated.json").write_text(
            json.dumps({"current": current_texts, "candidate": cand_texts}, indent=1),
            encoding="utf-8",
        )
        step.detail = f"{len(points)} held-out points"
        outcome.metrics = {"current": current_scores.summary(), "candidate": cand_scores.summary()}
        runs.update(
            run_id,
            current_metrics=current_scores.summary(),
            candidate_metrics=cand_scores.summary(),
        )

    with _step(outcome, "gate", on_step) as step:
        decision = decide(
            current_scores,
            cand_scores,
            [p.t for p in points],
            [p.source for p in points],
            config.gate,
        )
        outcome.metrics["gate"] = dict(decision.checks)
        step.detail = "pass" if decision.promote else "fail"
    _conclude(config, registry, runs, outcome, candidate_dir, decision, since)


def _maybe_dpo(
    config: NightlyConfig, settings: Settings, sft: Path, run_dir: Path, step: StepRecord
) -> tuple[Path, int]:
    try:
        from chatling.training.dpo.dpo import train_dpo
        from chatling.training.dpo.preference import preference_pairs_from_db
    except ImportError:
        step.detail = "skipped (no DPO support in this build)"
        return sft, 0
    pairs = preference_pairs_from_db(config.db_path, settings=settings.reply)
    if len(pairs) < config.min_preference_pairs:
        step.detail = (
            f"skipped: {len(pairs)} marked preference pairs (< {config.min_preference_pairs})"
        )
        log.info("DPO %s", step.detail)
        return sft, len(pairs)
    from chatling.training.sft.presets import get_preset

    out = train_dpo(sft, pairs, run_dir / "dpo", get_preset(config.preset), base=config.base_model)
    step.detail = f"{len(pairs)} preference pairs"
    return Path(out), len(pairs)


def _conclude(
    config: NightlyConfig,
    registry: AdapterRegistry,
    runs: RunLog,
    outcome: RunOutcome,
    candidate_dir: Path,
    decision: GateDecision,
    since: float | None,
) -> None:
    assert outcome.run_id is not None
    run_id = outcome.run_id
    meta_path = candidate_dir / "chatling_adapter.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    meta["nightly"] = {
        "run": run_id,
        "since_at": since,
        "gate": {"promote": decision.promote, "reason": decision.reason},
        "metrics": {k: v for k, v in outcome.metrics.items() if k != "gate"},
    }
    write_json_atomic(meta_path, meta)
    if not decision.promote:
        outcome.status, outcome.reason = "rejected", decision.reason
        runs.finish(run_id, "rejected", decision.reason)
        log.info("retrain run %d rejected: %s", run_id, decision.reason)
        return
    version = registry.add(candidate_dir)
    outcome.candidate_version = version.name
    runs.update(run_id, candidate_version=version.name)  # committed before the pointer moves
    with runs.transaction():
        runs.finish(run_id, "promoted", decision.reason)
        registry.promote(version.name)
    outcome.status, outcome.reason = "promoted", decision.reason
    log.info("retrain run %d promoted %s: %s", run_id, version.name, decision.reason)


def _write_summary(outcome: RunOutcome) -> None:
    if outcome.run_dir is None:
        return
    data = {
        "run": outcome.run_id,
        "status": outcome.status,
        "reason": outcome.reason,
        "candidate_version": outcome.candidate_version,
        "steps": [asdict(s) for s in outcome.steps],
        "metrics": outcome.metrics,
    }
    write_json_atomic(outcome.run_dir / "summary.json", data)


# --------------------------------------------------------------------------- entry point


def _raise_stop(signum: int, frame: Any) -> None:
    raise RunStopped(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """``python -m chatling.learn.nightly``: one run (what the scheduler starts as a child)."""
    parser = argparse.ArgumentParser(
        prog="python -m chatling.learn.nightly",
        description="One nightly retrain run (see docs).",
    )
    parser.add_argument("--env-file", default=".env", help="settings file (default .env)")
    parser.add_argument("--trigger", choices=("schedule", "manual"), default="schedule")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        settings = load_settings(args.env_file)
        config = NightlyConfig.from_settings(settings, args.trigger, args.env_file)
        # This whole process yields to the live bot, not only the trainer it starts:
        # scoring and the DPO step run here.
        os.nice(max(0, config.nice))
        import torch

        torch.set_num_threads(max(1, config.threads))
        outcome = run_nightly(config, settings)
    except ChatlingError as exc:
        print(f"chatling: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"run": outcome.run_id, "status": outcome.status, "reason": outcome.reason}))
    return 0 if outcome.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "STEPS",
    "NightlyConfig",
    "RunOutcome",
    "RunStopped",
    "StepRecord",
    "main",
    "run_nightly",
]
