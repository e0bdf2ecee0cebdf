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
   ``RUN/candidates.json``), plus sampled replies through the safety filter.
5. **gate**: ``chatling.learn.gate.decide``; **promote** only if it passes.

Every run is a ``training_runs`` row from start to decision. Promotion stores
the adapter as a new version (``chatling.learn.registry``), records the version in the
row (committed), then in one transaction marks the row promoted and replaces
the pointer file; a crash between the two is repaired by the next run, which
finds its row ``running`` with the pointer already on its version. Any other
row left ``running`` by a killed process is closed as ``failed``. Runs are
serialised by an exclusive lock on ``RUNS_DIR/.lock``; a second one is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatling.core.errors import ChatlingError, ModelError, StoreError
from chatling.core.paths import DEFAULT_MODEL_DIR, PROJECT_ROOT, resolve_path
from chatling.core.settings import Settings, load_settings
from chatling.learn.gate import AdapterScores, GateDecision, GateOptions, decide
from chatling.learn.registry import AdapterRegistry, write_json_atomic

log = logging.getLogger(__name__)

RUN_STATUSES = frozenset({"running", "promoted", "rejected", "failed", "skipped"})
STEPS = ("export", "train", "dpo", "evaluate", "gate")


class RunStopped(ChatlingError):
    """The run was asked to stop (SIGTERM, Ctrl-C)."""


@dataclass(frozen=True, slots=True)
class NightlyConfig:
    """Everything one run needs; ``from_settings`` is the normal way to get one."""

    db_path: Path
    adapters_dir: Path
    runs_dir: Path
    preset: str = "cpu-tiny"
    base_model: str | None = None
    base_data: Path | None = None
    max_steps: int | None = None
    min_new_pairs: int = 50
    min_preference_pairs: int = 8
    eval_points: int = 200
    gate_generations: int = 32
    test_fraction: float = 0.2
    gate: GateOptions = field(default_factory=GateOptions)
    nice: int = 15
    threads: int = 1
    seed: int = 0
    trigger: str = "manual"
    env_file: str | None = ".env"

    @classmethod
    def from_settings(
        cls, settings: Settings, trigger: str = "manual", env_file: str | None = ".env"
    ) -> NightlyConfig:
        s = settings.schedule
        return cls(
            db_path=resolve_path(settings.storage.db_path),
            adapters_dir=resolve_path(s.adapters_dir),
            runs_dir=resolve_path(s.runs_dir),
            preset=s.preset,
            base_model=s.base_model,
            base_data=resolve_path(s.base_data) if s.base_data else None,
            max_steps=s.max_steps,
            min_new_pairs=s.min_new_pairs,
            min_preference_pairs=s.min_preference_pairs,
            eval_points=s.eval_points,
            gate_generations=s.gate_generations,
            gate=GateOptions(
                perplexity_margin=s.gate_perplexity_margin, blocked_margin=s.gate_blocked_margin
            ),
            nice=s.nice,
            threads=s.train_threads,
            seed=settings.model.seed,
            trigger=trigger,
            env_file=env_file,
        )


@dataclass(slots=True)
class StepRecord:
    name: str
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    """Peak resident memory of this process and its children during the step."""
    detail: str = ""


@dataclass(slots=True)
class RunOutcome:
    run_id: int | None
    status: str
    reason: str
    candidate_version: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


# --------------------------------------------------------------------------- the runs table


class RunLog:
    """The ``training_runs`` rows of one database (plain sqlite3: the job is synchronous)."""

    def __init__(self, db_path: Path) -> None:
        if not db_path.is_file():
            raise StoreError(f"{db_path}: no such database; run the bot once (or check db_path)")
        self.path = db_path
        try:
            self.db = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{db_path}: cannot open the log ({exc})") from None
        if version < 2:
            self.db.close()
            raise StoreError(
                f"{db_path}: schema version {version} has no training_runs table; "
                "start chatling once to upgrade it"
            )

    def close(self) -> None:
        self.db.close()

    def start(self, trigger: str, current_version: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO training_runs (trigger, status, started_at, current_version, pid)"
            " VALUES (?, 'running', ?, ?, ?)",
            (trigger, time.time(), current_version, os.getpid()),
        )
        return int(cur.lastrowid or 0)

    def update(self, run_id: int, **fields: Any) -> None:
        for key, value in list(fields.items()):
            if isinstance(value, dict | list):
                fields[key] = json.dumps(value, ensure_ascii=False, default=str)
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE training_runs SET {assignments} WHERE id = ?", (*fields.values(), run_id)
        )

    def finish(self, run_id: int, status: str, reason: str, error: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {sorted(RUN_STATUSES)}")
        self.update(run_id, status=status, reason=reason, error=error, ended_at=time.time())

    def reconcile(self, registry: AdapterRegistry) -> int:
        """Close rows left ``running`` by runs that died (the caller holds the run lock)."""
        active = registry.pointer().version
        rows = self.db.execute(
            "SELECT id, candidate_version FROM training_runs WHERE status = 'running'"
        ).fetchall()
        for row in rows:
            if row["candidate_version"] and row["candidate_version"] == active:
                self.finish(row["id"], "promoted", "promoted; the run ended before recording it")
            else:
                self.finish(
                    row["id"], "failed", "interrupted", "the run's process ended before it finished"
                )
        if rows:
            log.warning("closed %d run(s) left unfinished by a previous process", len(rows))
        return len(rows)

    def since_for(self, version: str | None) -> float | None:
        """Start time of the run that promoted ``version``: logs after it are new."""
        if version is None:
            return None
        row = self.db.execute(
            "SELECT started_at FROM training_runs WHERE status = 'promoted'"
            " AND candidate_version = ? ORDER BY id DESC LIMIT 1",
            (version,),
        ).fetchone()
        return float(row["started_at"]) if row else None

    def rows(self, limit: int = 20) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in cur.fetchall()]


# --------------------------------------------------------------------------- measurement


class PeakSampler:
    """Peak RSS of this process plus its children, sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


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


# --------------------------------------------------------------------------- export


def _stream_is_new(row: sqlite3.Row, since: float | None) -> bool:
    if since is None:
        return True
    ended = row["ended_at"]
    return row["started_at"] >= since or ended is None or ended >= since


def export_pairs(
    db_path: Path, since: float | None, settings: Settings, out: Path
) -> tuple[int, list[str]]:
    """Write the pairs of streams active since ``since`` into the dataset ``out``."""
    from chatling.training.data.align import AlignOptions
    from chatling.training.data.dataset import SourceInfo, write_source
    from chatling.training.data.filters import FilterOptions, make_pairs
    from chatling.training.data.logdb import connect_read_only, from_db_filters, stream_lines

    filters = FilterOptions.from_settings(settings)
    align = AlignOptions()
    db = connect_read_only(db_path)
    total, names = 0, []
    try:
        streams = db.execute(
            "SELECT id, name, started_at, ended_at FROM streams ORDER BY started_at, id"
        ).fetchall()
        for stream in streams:
            if not _stream_is_new(stream, since):
                continue
            messages, segments = stream_lines(db, int(stream["id"]), filters.bots)
            name = f"live-stream-{stream['id']}"
            pairs, report = make_pairs(messages, segments, name, align, from_db_filters(filters))
            info = SourceInfo(
                name=name,
                kind="live",
                inputs={"db": str(db_path), "stream": str(stream["name"])},
                align=align,
                filters=filters.to_dict(),
                report=report,
                transcript_segments=len(segments),
            )
            write_source(out, pairs, info)
            total += len(pairs)
            names.append(name)
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot read the log ({exc})") from None
    finally:
        db.close()
    return total, names


def copy_base_data(base: Path, out: Path, skip: set[str]) -> int:
    """Copy every source of the dataset ``base`` into ``out`` (except ``skip``)."""
    from chatling.training.data.dataset import SourceInfo, load_pairs, read_manifest, write_source
    from chatling.training.data.pairs import Pair

    manifest = read_manifest(base)
    rows = load_pairs(base)
    by_source: dict[str, list[Pair]] = {}
    for row in rows:
        pair = Pair.from_row(row)
        by_source.setdefault(pair.source, []).append(pair)
    total = 0
    for name, pairs in by_source.items():
        if name in skip:
            continue
        entry = manifest["sources"].get(name, {})
        kind = entry.get("kind", "vod")
        info = SourceInfo(
            name=name,
            kind="live" if kind == "live" else "vod",
            sha256=entry.get("sha256"),
            inputs={**entry.get("inputs", {}), "copied_from": str(base)},
        )
        write_source(out, pairs, info)
        total += len(pairs)
    return total


# --------------------------------------------------------------------------- train


def _run_child(cmd: list[str], log_path: Path, nice: int, threads: int) -> None:
    """Run ``cmd`` at low priority, output to ``log_path``; stop it if we are stopped."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))

    def lower_priority() -> None:
        os.nice(max(0, nice))

    log.info("running: %s (log: %s)", " ".join(cmd), log_path)
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
            preexec_fn=lower_priority,  # before exec: only os.nice runs in the child
        )
        try:
            code = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise ModelError(f"training failed ({how}); last lines of {log_path}: " + " | ".join(tail))


def train_candidate(config: NightlyConfig, data: Path, out: Path, log_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "chatling.cli.train",
        "--data", str(data), "--out", str(out),
        "--preset", config.preset, "--split", "time", "--test-fraction", str(config.test_fraction),
        "--seed", str(config.seed),
    ]  # fmt: skip
    if config.base_model:
        cmd += ["--base", config.base_model]
    if config.max_steps:
        cmd += ["--steps", str(config.max_steps)]
    _run_child(cmd, log_path, config.nice, config.threads)


# --------------------------------------------------------------------------- evaluate


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
    scores = AdapterScores(
        name=name,
        per_point={m: summed.per_point[m] for m in ("recall@10", "mrr")},
        perplexity=perplexity,
        blocked=blocked,
        generated=generated,
    )
    del model
    return scores, texts


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


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def run_lock(runs_dir: Path) -> Iterator[bool]:
    """Exclusive per runs directory; yields False when another run holds it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with (runs_dir / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _base_of(adapter_dir: Path | None, config: NightlyConfig) -> str:
    if config.base_model:
        return config.base_model
    meta = adapter_dir / "chatling_adapter.json" if adapter_dir else None
    if meta is not None and meta.exists():
        base = json.loads(meta.read_text(encoding="utf-8")).get("base_model")
        if base:
            return str(base)
    return str(DEFAULT_MODEL_DIR)


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
            runs.reconcile(registry)
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
        base = _base_of(candidate_dir, config)
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
    runs.db.execute("BEGIN IMMEDIATE")
    try:
        runs.finish(run_id, "promoted", decision.reason)
        registry.promote(version.name)
        runs.db.execute("COMMIT")
    except BaseException:
        runs.db.execute("ROLLBACK")
        raise
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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    "NightlyConfig",
    "RunLog",
    "RunOutcome",
    "StepRecord",
    "export_pairs",
    "run_nightly",
]
