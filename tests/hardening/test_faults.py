"""Faults: a replay killed with SIGKILL, a full disk, the engine process dying.

- SIGKILL: a child (replay_child.py) replays a 60 s chat flood at 20x into a
  SQLite file and reports every commit; it is killed at a random moment, the
  file is checked (integrity, every reported row present) and the replay is
  started again on the same file, which must skip what is already logged.
- Disk full: the database lives on a 16 MiB tmpfs; a filler file takes the
  rest while chat flows and the bot replies (real engine). The store must
  name the file in its error, the bot must not post while nothing can be
  logged, and both must come back when space returns, with nothing lost.
- Engine: the vLLM engine-core process of a second engine (the session's is
  left alone) is killed while it generates: the reply is dropped with a log
  line, the engine restarts, the bot answers again. The bounds of the restart
  loop are tested on stand-ins.

Fast by default; ``CHATLING_HARDENING_FULL=1`` runs 20 kills and more engine
deaths and writes tests/hardening/results/faults.json.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chatling.app import build_limiter, build_safety
from chatling.core.clock import StreamClock
from chatling.core.errors import EngineError
from chatling.core.events import ChatMessage
from chatling.core.settings import ModelSettings, Settings
from chatling.display import Display
from chatling.engine import RestartPolicy, SamplingOptions, VllmEngine
from chatling.pipeline import EndOfStream, Pipeline, PipelineParts
from chatling.prompt import PromptBuilder
from chatling.store import Store
from tests.hardening.common import FULL, ROOT, chat_log_json, pick, write_results

pytestmark = [pytest.mark.hardening]

CHILD = Path(__file__).with_name("replay_child.py")
RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Any:
    yield
    if RESULTS:
        write_results("faults", RESULTS)


# -- SIGKILL mid-replay ----------------------------------------------------------------------


def _run_child(db: Path, chat: Path, kill_after_s: float | None) -> tuple[list[dict], int]:
    """Run one replay child; SIGKILL it ``kill_after_s`` after its stream started."""
    lines: queue.Queue[str | None] = queue.Queue()
    cmd = [sys.executable, str(CHILD), str(db), str(chat), "20", "60"]
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stderr is not None

        def read() -> None:
            for line in child.stdout:  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read)
        reader.start()
        reports: list[dict] = []
        try:
            first = lines.get(timeout=120)
            if first is None:
                pytest.fail(f"replay child exited early: {child.stderr.read()[-2000:]}")
            reports.append(json.loads(first))
            if kill_after_s is not None:
                threading.Event().wait(kill_after_s)
                child.send_signal(signal.SIGKILL)  # no handler, no flush, no close
        finally:
            if kill_after_s is None:
                child.wait(timeout=120)
            elif child.poll() is None:
                child.kill()
            child.wait(timeout=60)
            reader.join(timeout=60)
        err = child.stderr.read()
    while (line := lines.get_nowait()) is not None:
        if line.endswith("\n"):  # a line cut by the kill promised nothing
            reports.append(json.loads(line))
    if kill_after_s is None:
        assert child.returncode == 0, err[-3000:]
    return reports, child.returncode


def _check_promises(db: Path, ids: list[str], reports: list[dict]) -> dict[str, int]:
    """The file is sound and holds every row the child reported as committed."""
    acked = [r for r in reports if "chat" in r][-1]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [r[0] for r in conn.execute("SELECT message_id FROM chat_messages")]
        sid = acked["stream"]
        utterances = conn.execute(
            "SELECT count(*) FROM utterances WHERE stream_id = ?", (sid,)
        ).fetchone()[0]
        replies = conn.execute(
            "SELECT count(*) FROM bot_replies WHERE stream_id = ?", (sid,)
        ).fetchone()[0]
    finally:
        conn.close()
    assert len(stored) == len(set(stored)), "a chat message is stored twice"
    through = acked["chat"] + acked["duplicates"]
    missing = set(ids[:through]) - set(stored)
    assert not missing, f"{len(missing)} acknowledged chat rows are missing"
    assert utterances >= acked["utterances"] and replies >= acked["replies"]
    return {"acked_chat_through": through, "chat_rows": len(stored), "stream": sid}


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    kills = pick(3, 20)
    seed = 20261126
    rng = random.Random(seed)
    chat = tmp_path / "chat.json"
    ids = chat_log_json(chat, count=3000, rate_per_s=50.0, seed=7)  # 60 s of chat
    db = tmp_path / "replay.sqlite"
    runs = []
    for _ in range(kills):
        delay = round(rng.uniform(0.0, 3.3), 3)  # the replay takes about 3 s
        reports, code = _run_child(db, chat, delay)
        finished = any(r.get("done") for r in reports)
        checked = _check_promises(db, ids, reports)
        runs.append({"kill_after_s": delay, "exit": code, "finished": finished, **checked})
    reports, code = _run_child(db, chat, None)  # resume to the end
    final = _check_promises(db, ids, reports)
    conn = sqlite3.connect(db)
    try:
        stored = [r[0] for r in conn.execute("SELECT message_id FROM chat_messages")]
        streams = conn.execute("SELECT count(*), count(ended_at) FROM streams").fetchone()
    finally:
        conn.close()
    assert sorted(stored) == sorted(ids), "resume: every message once, none twice"
    assert streams[0] == kills + 1 and streams[1] >= 1 + sum(r["finished"] for r in runs)
    killed = [r for r in runs if r["exit"] == -signal.SIGKILL]
    RESULTS["sigkill"] = {
        "seed": seed,
        "kills": len(killed),
        "runs": runs,
        "chat_messages": len(ids),
        "after_resume": {"chat_rows": len(stored), "distinct": len(set(stored)), **final},
        "lost_acknowledged_rows": 0,
    }
    assert len(killed) >= (kills + 1) // 2, "most runs must be killed mid-replay"


# -- disk full ---------------------------------------------------------------------------------


class RecordingSink:
    """Replay-style sink that records when each reply was posted (wall clock)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    async def send(self, text: str, reply_to: ChatMessage | None) -> bool:
        self.sent.append((time.time(), text))
        return True


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a {size} tmpfs at {path} ({done.stderr.strip() or done.returncode}): "
            "the disk-full test needs root and mount permission"
        )


def _fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


async def _chat_feed(pipeline: Pipeline, clock: StreamClock, fed: list[ChatMessage]) -> None:
    """20 chat messages a second, one in five addressed to the bot."""
    for i in itertools.count():
        # Long lines: the store must run into the full disk soon (SQLite reuses its WAL's
        # space after a checkpoint, so short lines can take long to need a new page).
        pad = " gg" * 60
        text = f"chatling what do you think of level {i}?" if i % 5 == 0 else f"gg round {i}{pad}"
        message = ChatMessage(clock.now(), f"viewer{i % 37}", text, message_id=f"disk-{i}")
        fed.append(message)
        await pipeline.inbox.put(message)
        await asyncio.sleep(0.05)


async def _wait_for(condition: Any, what: str, within_s: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return time.time()


@pytest.mark.engine
@pytest.mark.slow
async def test_disk_full_stops_posting_and_recovers(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatling")
    mount = tmp_path / "small"
    # Room for SQLite's WAL (up to ~4 MiB before its automatic checkpoint) once the
    # filler is gone: the disk fills because of something else, then space returns.
    _mount_tmpfs(mount, "16m")
    db_path = mount / "chatling.sqlite"
    phase_s = pick(10.0, 20.0)  # long enough for a reply to finish on a busy 2-core box
    try:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        for key, value in dict(
            global_cooldown_s=1.0, user_cooldown_s=0.0, rate_messages=50
        ).items():
            setattr(settings.reply, key, value)
        fed: list[ChatMessage] = []
        sink = RecordingSink()
        async with Store.open(db_path, flush_interval_s=0.1, max_batch=200) as store:
            stream_id = await store.start_stream("disk", "replay", "replay", engine.model_name)
            clock = StreamClock(1.0)
            pipeline = Pipeline(
                PipelineParts(
                    settings=settings.reply,
                    engine=engine,
                    prompts=PromptBuilder(settings.reply, engine.count_tokens),
                    safety=build_safety(settings),
                    limiter=build_limiter(settings),
                    store=store,
                    stream_id=stream_id,
                    sink=sink,
                    display=Display(quiet=True),
                    clock=clock,
                )
            )
            running = asyncio.create_task(pipeline.run())
            feeding = asyncio.create_task(_chat_feed(pipeline, clock, fed))
            try:
                await _wait_for(lambda: len(sink.sent) >= pick(1, 3), "replies before", 120)
                filler = _fill(mount)
                full_at = time.time()
                await _wait_for(lambda: not store.healthy, "the store to fail", 60)
                await asyncio.sleep(phase_s)
                attempts_while_full = pipeline.stats.store_unhealthy
                pending_while_full = store.pending
                filler.unlink()
                freed_at = time.time()
                await _wait_for(lambda: store.healthy, "the store to recover", 10)
                posted_before_heal = len(sink.sent)
                await _wait_for(
                    lambda: len(sink.sent) > posted_before_heal, "a reply after recovery", 120
                )
            finally:
                feeding.cancel()
                await asyncio.gather(feeding, return_exceptions=True)
                await pipeline.inbox.put(EndOfStream())
                stats = await running
            await store.end_stream(stream_id)
            committed = store.committed
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            chat_rows = conn.execute("SELECT count(*) FROM chat_messages").fetchone()[0]
            reply_rows = dict(
                conn.execute("SELECT status, count(*) FROM bot_replies GROUP BY status").fetchall()
            )
        finally:
            conn.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)

    store_logs = [r for r in caplog.records if r.name == "chatling.store.store"]
    errors = [r for r in store_logs if r.levelno >= logging.ERROR]
    assert errors, "no error was logged when the disk filled"
    message = errors[0].getMessage()
    assert str(db_path) in message and "full" in message.lower(), message
    healed = [r for r in store_logs if "writing again" in r.getMessage()]
    assert len(healed) == len(errors), "the store did not log its recovery"
    # The store logs both transitions in the same step as it flips ``healthy``.
    outages = [(e.created, h.created) for e, h in zip(errors, healed, strict=True)]
    broke_at, healed_at = outages[0]
    posted_while_full = [t for t, _ in sink.sent if any(a <= t < b for a, b in outages)]
    assert not posted_while_full, "the bot posted while nothing could be logged"
    assert attempts_while_full >= 1, "no reply was attempted while the disk was full"
    assert chat_rows == len(fed), "chat messages were lost"
    attempts = stats.posted + stats.blocked + stats.rate_limited + stats.failed
    attempts += stats.store_unhealthy  # logged as 'failed', counted apart
    assert sum(reply_rows.values()) == attempts == committed.replies
    RESULTS["disk_full"] = {
        "file_system": "tmpfs 16 MiB, filled by another file",
        "outages": len(outages),
        "error_logged": message,
        "store_failed_after_fill_s": round(broke_at - full_at, 2),
        "full_for_s": round(freed_at - broke_at, 1),
        "store_recovered_after_free_s": round(healed_at - freed_at, 2),
        "queued_while_full": pending_while_full,
        "replies_refused_while_full": attempts_while_full,
        "posted_while_full": 0,
        "chat_fed": len(fed),
        "chat_rows": chat_rows,
        "reply_rows": reply_rows,
        "posted_after_recovery": len([t for t, _ in sink.sent if t >= healed_at]),
    }


# -- engine process death: bounds on stand-ins ------------------------------------------------


class _DeadLLM:
    """An ``AsyncLLM`` whose engine process is gone."""

    errored = True

    def __init__(self) -> None:
        self.shutdowns = 0

    def shutdown(self) -> None:
        self.shutdowns += 1

    async def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        from vllm.v1.engine.exceptions import EngineDeadError

        self.errored = True
        raise EngineDeadError()
        yield  # an async generator, like AsyncLLM.generate

    async def abort(self, request_id: str) -> None:
        return None


class _LiveLLM:
    """An ``AsyncLLM`` stand-in that answers every request with one short completion."""

    errored = False

    def __init__(self) -> None:
        self.loras: list[int] = []

    def shutdown(self) -> None:
        return None

    async def add_lora(self, request: Any) -> bool:
        self.loras.append(request.lora_int_id)
        return True

    async def generate(self, prompt: Any, params: Any, request_id: str, **kw: Any) -> Any:
        from types import SimpleNamespace

        await asyncio.sleep(0.01)
        done = SimpleNamespace(index=0, text="fine", token_ids=[1])
        yield SimpleNamespace(outputs=[done], finished=True)


async def test_a_dead_engine_is_rebuilt_once_for_all_waiting_callers(tmp_path: Path) -> None:
    """The restart logic on stand-ins (the real process is killed in full mode)."""
    from chatling.engine import Adapter

    builds: list[_LiveLLM] = []

    def build() -> Any:
        time.sleep(0.3)  # in a worker thread: the event loop must stay free meanwhile
        builds.append(_LiveLLM())
        return builds[-1]

    eng = VllmEngine(_DeadLLM(), None, "toy", rebuild=build)  # type: ignore[arg-type]
    eng._adapter = Adapter("v1", 7, str(tmp_path))
    with pytest.raises(EngineError, match="failed"):  # the request in flight is dropped
        eng._llm.errored = False  # it dies during the request, not before
        await eng.generate([1], SamplingOptions(n=1))
    assert not eng.alive
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    served = await asyncio.gather(*(eng.generate([1], SamplingOptions(n=1)) for _ in range(4)))
    ticker.cancel()
    assert [g.texts for g in served] == [["fine"]] * 4
    assert len(builds) == 1 and eng.restarts == 1 and eng.alive
    assert builds[0].loras == [7], "the adapter in use was not loaded again"
    assert ticks >= 10, "the event loop stalled during the rebuild"


async def test_restart_gives_up_after_bounded_attempts_with_a_clear_error() -> None:
    builds: list[float] = []

    def build() -> Any:
        builds.append(time.monotonic())
        raise RuntimeError("Engine core initialization failed")

    policy = RestartPolicy(attempts=3, backoff_s=0.1)
    eng = VllmEngine(_DeadLLM(), None, "toy", rebuild=build, restart=policy)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="3 restarts failed") as failed:
        await eng.generate([1, 2, 3], SamplingOptions(n=1))
    assert "restart chatling" in str(failed.value)
    assert len(builds) == 3
    gaps = [b - a for a, b in itertools.pairwise(builds)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, "no backoff between attempts"
    with pytest.raises(EngineError):  # from now on at once, with no further build
        await eng.generate([1, 2, 3], SamplingOptions(n=1))
    assert len(builds) == 3 and not eng.alive


async def test_an_engine_that_keeps_dying_is_not_restarted_forever() -> None:
    builds = 0

    def build() -> Any:
        nonlocal builds
        builds += 1
        return _DeadLLM()  # comes up, dies at once

    policy = RestartPolicy(attempts=1, backoff_s=0.01, max_restarts=3, window_s=60)
    eng = VllmEngine(_DeadLLM(), None, "toy", rebuild=build, restart=policy)  # type: ignore[arg-type]
    errors = []
    for _ in range(8):
        with pytest.raises(EngineError) as failed:
            await eng.generate([1], SamplingOptions(n=1))
        errors.append(str(failed.value))
    assert builds == 3
    assert "not restarting it again" in errors[-1]
    RESULTS.setdefault("engine_bounds", {})["crash_loop"] = {
        "deaths_allowed": 3,
        "calls": 8,
        "builds": builds,
        "final_error": errors[-1],
    }


# -- engine process death: the real thing ------------------------------------------------------


def _engine_core_pids(before: set[int]) -> list[int]:
    """The vLLM ``EngineCore`` processes started after ``before`` (not the session's)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            title = f"{child.name()} {' '.join(child.cmdline())}"
        except psutil.NoSuchProcess:
            continue
        if "EngineCor" in title:
            found.append(child.pid)
    return found


class _Watched:
    """The engine, with an event set whenever a generation starts (to kill it mid-way)."""

    def __init__(self, engine: VllmEngine) -> None:
        self._engine = engine
        self.started = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, prompt_ids: list[int], options: SamplingOptions) -> Any:
        self.started.set()
        return await self._engine.generate(prompt_ids, options)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


async def _pipeline_survives_a_kill(eng: VllmEngine, before: set[int], db: Path) -> dict[str, Any]:
    """Replies flow, the engine process is killed mid-generation, replies flow again."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for key, value in dict(global_cooldown_s=0.5, user_cooldown_s=0.0, rate_messages=100).items():
        setattr(settings.reply, key, value)
    watched = _Watched(eng)
    sink = RecordingSink()
    clock = StreamClock(1.0)
    async with Store.open(db, flush_interval_s=0.2) as store:
        stream_id = await store.start_stream("engine", "replay", "replay", eng.model_name)
        pipeline = Pipeline(
            PipelineParts(
                settings=settings.reply,
                engine=watched,  # type: ignore[arg-type]
                prompts=PromptBuilder(settings.reply, eng.count_tokens),
                safety=build_safety(settings),
                limiter=build_limiter(settings),
                store=store,
                stream_id=stream_id,
                sink=sink,
                display=Display(quiet=True),
                clock=clock,
            )
        )
        running = asyncio.create_task(pipeline.run())
        fed: list[ChatMessage] = []
        feeding = asyncio.create_task(_chat_feed(pipeline, clock, fed))
        try:
            await _wait_for(lambda: len(sink.sent) >= 1, "a first reply", 120)
            watched.started.clear()
            await watched.started.wait()
            await asyncio.sleep(0.05)
            pids = _engine_core_pids(before)
            _kill(pids)
            killed_at = time.time()
            await _wait_for(lambda: pipeline.stats.failed >= 1, "a dropped reply", 60)
            restarted_at = await _wait_for(lambda: eng.restarts >= 1 and eng.alive, "restart", 300)
            await _wait_for(lambda: any(t > restarted_at for t, _ in sink.sent), "a reply", 120)
        finally:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
            await pipeline.inbox.put(EndOfStream())
            stats = await running
        await store.end_stream(stream_id)
    conn = sqlite3.connect(db)
    try:
        failed_rows = conn.execute(
            "SELECT count(*) FROM bot_replies WHERE status = 'failed'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert failed_rows == stats.failed >= 1
    return {
        "killed_pids": len(pids),
        "restart_s": round(restarted_at - killed_at, 1),
        "replies_failed": stats.failed,
        "posted_before_kill": sum(t < killed_at for t, _ in sink.sent),
        "posted_after_restart": sum(t > restarted_at for t, _ in sink.sent),
    }


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="starts a second engine (minutes): full mode only")
async def test_engine_process_killed_mid_generation_restarts(
    engine: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second engine beside the session's (the packaged 135M model, 1 GiB KV cache)."""
    free_gib = psutil.virtual_memory().available / 2**30
    if free_gib < 5.0:
        pytest.skip(f"only {free_gib:.1f} GiB free: a second engine beside the session's needs 5")
    caplog.set_level(logging.INFO, logger="chatling")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    record: dict[str, Any] = {}
    async with VllmEngine.start(ModelSettings(enforce_eager=True, max_model_len=1024)) as eng:
        record["engine_core_processes"] = len(_engine_core_pids(before))
        assert record["engine_core_processes"] == 1, "cannot tell the new EngineCore process"
        record["rss_mib_with_two_engines"] = round(psutil.Process().memory_info().rss / 2**20)
        record["pipeline"] = await _pipeline_survives_a_kill(eng, before, tmp_path / "e.sqlite")
        if FULL:
            record["direct"] = await _direct_kill_with_waiters(eng, before)
            record["idle"] = await _idle_death(eng, before)
        record["restarts"] = eng.restarts
    dropped = [r for r in caplog.records if "reply dropped" in r.getMessage()]
    assert dropped, "the dropped reply was not logged"
    assert any("restarted" in r.getMessage() for r in caplog.records)
    assert record["pipeline"]["posted_after_restart"] >= 1
    RESULTS["engine_death"] = record


async def _direct_kill_with_waiters(eng: VllmEngine, before: set[int]) -> dict[str, Any]:
    """Kill during a long generation; callers arriving during the restart wait and succeed."""
    ids = eng.render_chat("You are a storyteller.", "Tell a very long story about a goose.")
    long = SamplingOptions(n=4, max_tokens=1000, stop=(), temperature=1.0)
    restarts = eng.restarts
    task = asyncio.create_task(eng.generate(ids, long))
    await asyncio.sleep(1.0)
    assert not task.done(), "the long generation ended before the kill"
    _kill(_engine_core_pids(before))
    killed = time.monotonic()
    with pytest.raises(EngineError):
        await asyncio.wait_for(task, 60)
    error_after_s = time.monotonic() - killed
    short = SamplingOptions(n=2, max_tokens=8)
    waiters = await asyncio.wait_for(
        asyncio.gather(*(eng.generate(ids, short) for _ in range(3))), 300
    )
    assert all(len(g.texts) == 2 for g in waiters)
    assert eng.restarts == restarts + 1, "concurrent callers must share one restart"
    return {
        "error_after_kill_s": round(error_after_s, 2),
        "waiters_served": len(waiters),
        "back_after_s": round(time.monotonic() - killed, 1),
    }


async def _idle_death(eng: VllmEngine, before: set[int]) -> dict[str, Any]:
    """The process dies while nothing runs: the next request restarts it and is served."""
    restarts = eng.restarts
    _kill(_engine_core_pids(before))
    killed = time.monotonic()
    await _wait_for(lambda: not eng.alive, "the death to be noticed", 30)
    ids = eng.render_chat("You are terse.", "Say hi.")
    generation = await asyncio.wait_for(eng.generate(ids, SamplingOptions(n=1)), 300)
    assert eng.restarts == restarts + 1 and generation.texts
    return {"served_after_s": round(time.monotonic() - killed, 1)}
