"""``chatling run`` as a streamer runs it: a real process, live for a minute, then SIGTERM.

Twitch is the fake on 127.0.0.1 (devtools/fakes/twitch_server.py) reached through the
``CHATLING_TWITCH__*_URL`` settings; stream audio is real speech played into the
null sink of a private PulseAudio daemon and recorded through soundcard. The
process starts its own vLLM engine and Whisper, so this is the slowest test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from chatling.core.paths import PROJECT_ROOT
from devtools.fakes.twitch_server import FakeTwitch
from devtools.pulse import PulseServer, play, pulse_missing
from tests.conftest import SPEECH, require_shared

pytestmark = [pytest.mark.slow]


def _env_file(tmp_path, fake: FakeTwitch, access: str, refresh: str) -> str:
    lines = {
        **fake.env_settings(access, refresh, str(tmp_path / "tokens.json")),
        "CHATLING_STORAGE__DB_PATH": str(tmp_path / "live.sqlite"),
        "CHATLING_MODEL__ENFORCE_EAGER": "true",
        "CHATLING_REPLY__GLOBAL_COOLDOWN_S": "3",
        "CHATLING_REPLY__USER_COOLDOWN_S": "3",
        "CHATLING_REPLY__QUIET_INTERVAL_S": "15",
        "CHATLING_LOG_LEVEL": "DEBUG",
    }
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return str(path)


async def _wait(condition, what: str, proc: subprocess.Popen, log, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(
                f"chatling run exited early ({proc.returncode}) while waiting for "
                f"{what}:\n{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        await asyncio.sleep(0.5)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the bot and its vLLM engine-core children (their own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


async def test_chatling_run_live_then_sigterm(tmp_path) -> None:
    reason = pulse_missing()
    if reason:
        pytest.skip(reason)
    speech = require_shared(SPEECH)
    with FakeTwitch() as fake, PulseServer() as pulse_env:
        access, refresh = fake.issue_tokens()
        env_file = _env_file(tmp_path, fake, access, refresh)
        log = tmp_path / "chatling-run.log"
        log_file = open(log, "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatling", "--env-file", env_file, "run", "--no-chat"],
            cwd=PROJECT_ROOT,
            env={**pulse_env, "PYTHONUNBUFFERED": "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await _wait(
                lambda: fake._chat_target() is not None,
                "the EventSub subscription",
                proc,
                log,
                within_s=400,
            )
            started = time.monotonic()
            sent: list[str] = []
            addressed: list[str] = []
            for i in range(5):
                sent.append(await fake.send_chat(f"hello stream {i} PogChamp", chatter=f"fan{i}"))
            addressed.append(
                await fake.send_chat("@chatling what do you think of this?", chatter="curious_cat")
            )
            await asyncio.to_thread(play, speech / "jfk.flac", env=pulse_env)
            for i in range(5):
                sent.append(await fake.send_chat(f"that speech was wild {i}", chatter=f"fan{i}"))
                await asyncio.sleep(1.0)
            await _wait(
                lambda: len(fake.chat_posts) >= 1,
                "a reply posted to Twitch",
                proc,
                log,
                within_s=240,
            )
            # Keep it running for a minute in all, as a streamer would.
            await asyncio.sleep(max(0.0, 60 - (time.monotonic() - started)))
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 120)
            except subprocess.TimeoutExpired:
                # The bot logs what it still waits for after 45 s (chatling.shutdown_watch).
                pytest.fail(f"chatling run did not stop within 120 s:\n{log.read_text()[-8000:]}")
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            log_file.close()
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert access not in output and refresh not in output, "a token leaked into the logs"

    db = sqlite3.connect(tmp_path / "live.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in db.execute("SELECT message_id FROM chat_messages")}
        utterances = " ".join(r[0] for r in db.execute("SELECT text FROM utterances")).lower()
        replies = db.execute("SELECT status, in_reply_to FROM bot_replies").fetchall()
        ended = db.execute("SELECT ended_at FROM streams").fetchone()[0]
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert set(sent + addressed) <= stored, "every chat message received must be stored"
    assert "country" in utterances, f"loopback speech not transcribed: {utterances!r}"
    assert ended is not None, "the stream was not closed cleanly"
    assert any(status == "posted" for status, _ in replies)
    assert access not in dump and refresh not in dump
    posts = [p.body for p in fake.chat_posts]
    assert all(p["sender_id"] == fake.bot.id for p in posts)
    assert any(p.get("reply_parent_message_id") == addressed[0] for p in posts), posts
    assert os.path.exists(tmp_path / "tokens.json")
    assert oct(os.stat(tmp_path / "tokens.json").st_mode & 0o777) == "0o600"
