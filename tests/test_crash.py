"""What a killed bot leaves behind: nothing of the engine, and a closed stream.

The main test runs the real ``chatling replay`` (real vLLM engine, packaged
model, the demo clip) as a subprocess, SIGKILLs it once the engine's
EngineCore and Worker processes serve the replay, and checks that no process
of its tree is alive 10 s later, and that the next start closes the stream
the kill left open. The other tests drive ``chatling.procwatch`` with real
processes (``sleep`` as the owner) in well under a second each.
Run: ``.venv/bin/python -m pytest -q tests/test_crash.py``
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from chatling import procwatch
from chatling.core.paths import PROJECT_ROOT
from chatling.store import Store

CLIP = PROJECT_ROOT / "data" / "demo" / "clip.opus"
CLIP_CHAT = PROJECT_ROOT / "data" / "demo" / "clip_chat.json"


def _owner() -> subprocess.Popen:
    """A real process to own things: killed by the test when it wants the owner gone."""
    return subprocess.Popen(["sleep", "60"])


def _gone(procs: list[psutil.Process]) -> bool:
    """All exited (a zombie counts: it holds no memory, only a pid for init to reap)."""
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def _kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


# -- the watch, on real processes ------------------------------------------------------


def test_watch_fires_when_the_owner_exits_and_not_before() -> None:
    owner = _owner()
    fired: list[int] = []
    done = threading.Event()
    try:
        ticks = procwatch.start_ticks(owner.pid)
        assert ticks is not None
        thread = procwatch.watch_owner(
            owner.pid, ticks, lambda pid: (fired.append(pid), done.set())
        )
        assert thread is not None and not done.wait(0.3), "fired while the owner lives"
        owner.kill()
        assert done.wait(10), "the owner died and the watch did not notice"
        assert fired == [owner.pid]
    finally:
        owner.kill()
        owner.wait()


def test_an_owner_already_gone_or_reused_fires_at_once() -> None:
    owner = _owner()
    ticks = procwatch.start_ticks(owner.pid)
    assert ticks is not None
    token = procwatch.process_token(owner.pid)
    fired: list[int] = []
    # The pid runs, but started at another time: a recycled pid, not our owner.
    assert procwatch.watch_owner(owner.pid, ticks + 1, fired.append) is None
    owner.kill()
    owner.wait()
    assert procwatch.watch_owner(owner.pid, ticks, fired.append) is None  # gone and reaped
    assert fired == [owner.pid, owner.pid]
    assert procwatch.token_alive(procwatch.process_token()) is True
    assert procwatch.token_alive(token) is False
    assert procwatch.token_alive("another-machine:1:1") is None


def test_an_engine_process_and_its_children_die_with_the_owner(tmp_path: Path) -> None:
    """What vLLM's processes run (the plugin hook), in a real process with a child."""
    owner = _owner()
    pid_file = tmp_path / "grandchild"
    code = (
        "import subprocess, sys, time\n"
        "from chatling import procwatch\n"
        "procwatch.register()\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, procwatch.OWNER_ENV: f"{owner.pid}:{procwatch.start_ticks(owner.pid)}"}
    engine_like = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env)
    procs = [psutil.Process(engine_like.pid)]
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert engine_like.poll() is None, "the child died before its owner"
            assert time.monotonic() < deadline, "the child never started its own child"
            time.sleep(0.05)
        procs.append(psutil.Process(int(pid_file.read_text())))
        assert engine_like.poll() is None
        owner.kill()
        owner.wait()
        assert engine_like.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while not _gone(procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(procs), "the engine process's own child outlived it"
    finally:
        owner.kill()
        owner.wait()
        _kill_all(procs)
        engine_like.wait()


def test_vllm_finds_the_plugin_from_the_repository_root() -> None:
    """``python -m chatling`` runs with the repository root first on sys.path, where a stale
    ``chatling.egg-info`` would hide the installed entry points from vLLM."""
    code = (
        "from importlib.metadata import entry_points\n"
        "print([e.value for e in entry_points(group='vllm.general_plugins')])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert "chatling.procwatch:register" in out.stdout, (
        "vLLM will not load chatling's plugin: reinstall (`pip install -e .`) and keep "
        "chatling.egg-info/entry_points.txt in step with pyproject.toml"
    )


# -- the real CLI, killed ----------------------------------------------------------------


def _stream_started(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return bool(conn.execute("SELECT count(*) FROM streams").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # created but not migrated yet
        return False


@pytest.mark.engine
@pytest.mark.slow
async def test_sigkilled_replay_leaves_no_engine_process_and_its_stream_is_closed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "killed.sqlite"
    argv = [sys.executable, "-m", "chatling", "--env-file", "/nonexistent/.env", "replay"]
    argv += ["--audio", str(CLIP), "--chat", str(CLIP_CHAT), "--db", str(db), "--quiet"]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        bot = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=stdout, stderr=stderr)
    tree: list[psutil.Process] = []
    try:
        root = psutil.Process(bot.pid)
        deadline = time.monotonic() + 300
        while not _stream_started(db):  # the stream starts once the engine is up
            assert bot.poll() is None, f"replay exited early: {err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the engine did not come up in 300 s"
            time.sleep(0.2)
        tree = root.children(recursive=True)
        names = {p.name() for p in tree}
        assert {"VLLM::EngineCore", "VLLM::Worker"} <= names, names
        rss_mib = {p.name(): p.memory_info().rss >> 20 for p in tree}
        bot.send_signal(signal.SIGKILL)
        assert bot.wait(timeout=10) == -signal.SIGKILL
        killed_at = time.monotonic()
        while not _gone(tree) and time.monotonic() - killed_at < 10:
            time.sleep(0.1)
        alive = [(p.pid, p.name()) for p in tree if not _gone([p])]
        assert not alive, f"alive 10 s after kill -9 of the bot: {alive} (RSS MiB {rss_mib})"
        print(f"tree before the kill (RSS MiB): {rss_mib}; all gone after ", end="")
        print(f"{time.monotonic() - killed_at:.1f} s")
    finally:
        if bot.poll() is None:
            bot.kill()
        bot.wait()
        _kill_all(tree)  # never leave 4 GiB behind, even when the test fails
    # vLLM's log lines (warnings and errors included) go to stderr, not stdout.
    assert "vllm" not in out.read_text().lower()
    # The next start closes the stream the kill left open.
    async with Store.open(db):
        pass
    conn = sqlite3.connect(db)
    try:
        ((ended, cleanly, started),) = conn.execute(
            "SELECT ended_at, ended_cleanly, started_at FROM streams"
        ).fetchall()
    finally:
        conn.close()
    assert cleanly == 0 and ended is not None and ended >= started
