"""Secrets never leak: planted tokens are absent from every output chatling writes.

Four distinctive values are planted as the Twitch bot token, refresh token
and client secret and the Discord token (in a ``.env`` file and in the
environment), with logging at DEBUG. Then chatling runs what a user runs:

- ``chatling config check`` (a subprocess), from the file and from the env;
- a short replay of the demo clip (``chatling.app.replay``, the code behind
  ``chatling replay``, with the session's engine and Whisper: a subprocess
  would start a second engine), at speed 4, logging every logger at DEBUG to a
  file;
- failing paths: ``chatling run`` with a model that does not exist (a
  subprocess, ``-v``); the Twitch client against a closed port (a bad Twitch
  URL) and against a fake Twitch that refuses the planted tokens, each
  exception logged with its traceback;
- ``chatling data from-db`` on the replay's SQLite log (a subprocess);
- the token file: written 0600 (also over a 0644 file, under umask 0), no
  temporary file left, a damaged one refused without quoting it.

Asserted: no planted value (nor its distinctive middle) appears in any
stdout/stderr, log file, exception text or traceback, SQLite dump or written
file; masked values show as ``**********``.

Run: ``.venv/bin/python -m pytest -q tests/hardening/test_secrets.py``
(full mode records the counts in ``results/secrets.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from chatling.app import ReplayRequest, replay
from chatling.core.errors import ChatlingError
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import TwitchSettings, load_settings
from chatling.display import Display
from chatling.platforms.twitch import auth
from chatling.platforms.twitch.client import TwitchChat

pytestmark = [pytest.mark.hardening]

FULL = os.environ.get("CHATLING_HARDENING_FULL") == "1"
RESULTS = Path(__file__).resolve().parent / "results" / "secrets.json"
CLIP = PROJECT_ROOT / "data" / "demo" / "clip.opus"
CLIP_CHAT = PROJECT_ROOT / "data" / "demo" / "clip_chat.json"

PLANTED = {
    "CHATLING_TWITCH__BOT_TOKEN": "plntBOTtok3n7f3a9c1e5b2d8",
    "CHATLING_TWITCH__REFRESH_TOKEN": "plntREFRESHr8d2e4f6a0c9b1",
    "CHATLING_TWITCH__CLIENT_SECRET": "plntCLIENTsecq9w8e7r6t5y4",
    "CHATLING_DISCORD__TOKEN": "plntDISCORDz1x2c3v4b5n6m7",
}
"""Distinctive values; their middles (``7f3a9c1e5b``...) are searched for too."""
NEEDLES = [v for value in PLANTED.values() for v in (value, value[8:18])]
CHECKED: dict[str, int] = {}
"""What was searched, by kind of output (for the results file)."""


def assert_clean(kind: str, text: str) -> None:
    """No planted value nor its middle in ``text``."""
    CHECKED[kind] = CHECKED.get(kind, 0) + 1
    leaked = [n for n in NEEDLES if n in text]
    assert leaked == [], f"{kind} leaks a planted secret"


def assert_files_clean(kind: str, root: Path) -> int:
    """Every file under ``root`` (SQLite files as their dump); returns how many."""
    count = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        count += 1
        data = path.read_bytes()
        assert_clean(f"{kind} file", data.decode("utf-8", errors="replace"))
        if data.startswith(b"SQLite format 3"):
            assert_clean(f"{kind} sqlite dump", sqlite_dump(path))
    return count


def sqlite_dump(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def env_file(tmp_path: Path, **extra: str) -> Path:
    path = tmp_path / "secrets.env"
    lines = [f"{k}={v}" for k, v in PLANTED.items()]
    lines += ["CHATLING_LOG_LEVEL=DEBUG", *(f"{k}={v}" for k, v in extra.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chatling(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """``chatling ARGS`` as a subprocess (``python -m chatling``), output captured."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATLING_")}
    return subprocess.run(
        [sys.executable, "-m", "chatling", *args],
        cwd=PROJECT_ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def debug_log_file(path: Path) -> Iterator[None]:
    """Every logger at DEBUG into ``path`` for the duration."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet = {}
    for name in ("httpx", "faster_whisper", "chatling.safety", "aiohttp", "twitchio"):
        quiet[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    if FULL and CHECKED:
        RESULTS.parent.mkdir(exist_ok=True)
        data = {
            "planted_values": len(PLANTED),
            "outputs_searched": dict(sorted(CHECKED.items())),
            "leaks": 0,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        RESULTS.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# -- config check ------------------------------------------------------------------------------


def test_config_check_masks_every_planted_secret(tmp_path: Path) -> None:
    from_file = chatling("--env-file", str(env_file(tmp_path)), "config", "check")
    from_env = chatling("--env-file", str(tmp_path / "absent.env"), "config", "check", env=PLANTED)
    for result in (from_file, from_env):
        assert result.returncode == 0, result.stderr
        assert_clean("config check stdout", result.stdout)
        assert_clean("config check stderr", result.stderr)
        shown = json.loads(result.stdout)
        assert shown["twitch"]["bot_token"] == "**********"
        assert shown["twitch"]["refresh_token"] == "**********"
        assert shown["twitch"]["client_secret"] == "**********"
        assert shown["discord"]["token"] == "**********"


def test_settings_objects_never_show_secrets(tmp_path: Path) -> None:
    settings = load_settings(env_file(tmp_path))
    assert settings.twitch.bot_token.get_secret_value() == PLANTED["CHATLING_TWITCH__BOT_TOKEN"]
    for text in (repr(settings), str(settings), f"{settings.twitch}", repr(settings.discord)):
        assert_clean("settings repr", text)
    assert_clean("settings dump", json.dumps(settings.model_dump(mode="json")))


# -- a short replay at DEBUG, then the training data written from its log ------------------------


@pytest.mark.engine
async def test_replay_at_debug_and_its_outputs_hold_no_secret(
    tmp_path: Path, engine: Any, whisper_model: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    env = env_file(tmp_path)
    settings = load_settings(env)
    settings.storage.db_path = str(tmp_path / "replay.sqlite")
    settings.storage.flush_interval_s = 0.2
    for key, value in dict(global_cooldown_s=2.0, quiet_interval_s=4.0, quiet_jitter_s=1.0).items():
        setattr(settings.reply, key, value)
    log_path = tmp_path / "logs" / "replay-debug.log"
    log_path.parent.mkdir()
    with debug_log_file(log_path):
        result = await replay(
            settings,
            ReplayRequest(audio=CLIP, chat=CLIP_CHAT, speed=4.0),
            Display(),
            engine=engine,
            whisper_model=whisper_model,
        )
    out, err = capfd.readouterr()
    assert result.stats.chat_in > 0 and "DEBUG" in log_path.read_text("utf-8")
    assert_clean("replay stdout", out)
    assert_clean("replay stderr", err)
    assert_clean("replay debug log", log_path.read_text("utf-8"))
    dump = sqlite_dump(Path(result.db_path))
    assert "chat_messages" in dump and "bot_replies" in dump
    assert_clean("replay sqlite dump", dump)

    # The training-data writer on that log, with the same settings file.
    out_dir = tmp_path / "pairs"
    written = chatling(
        "--env-file", str(env), "data", "from-db", "--db", str(result.db_path),
        "--out", str(out_dir), "-v",
    )  # fmt: skip
    assert written.returncode == 0, written.stderr[-2000:]
    assert_clean("data from-db stdout", written.stdout)
    assert_clean("data from-db stderr", written.stderr)
    assert assert_files_clean("data from-db", out_dir) > 0
    assert_files_clean("replay", tmp_path / "logs")


# -- failing paths -----------------------------------------------------------------------------


def test_failing_run_command_leaks_nothing(tmp_path: Path) -> None:
    env = env_file(
        tmp_path,
        CHATLING_TWITCH__CHANNEL="streamer",
        CHATLING_TWITCH__CLIENT_ID="cid",
        CHATLING_TWITCH__HELIX_URL="http://127.0.0.1:9/helix/",
        CHATLING_MODEL__NAME=str(tmp_path / "no-such-model"),
        CHATLING_AUDIO__ENABLED="false",
    )
    result = chatling("--env-file", str(env), "run", "--run-for", "2", "-v", timeout=60)
    assert result.returncode != 0
    assert "no-such-model" in result.stderr  # it failed where expected, and said so
    assert_clean("run stdout", result.stdout)
    assert_clean("run stderr", result.stderr)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _twitch_settings(base: str, helix: str, wss: str) -> TwitchSettings:
    secret = {k.split("__")[1].lower(): SecretStr(v) for k, v in PLANTED.items() if "TWITCH" in k}
    return TwitchSettings(
        channel="streamer", bot_login="chatling_bot", client_id="fake-client-id",
        id_url=base, helix_url=helix, eventsub_url=wss, **secret,
    )  # fmt: skip


@pytest.fixture
def restore_twitchio(monkeypatch: pytest.MonkeyPatch) -> None:
    """``TwitchChat`` points twitchio's module URLs at the settings' ones: undo it after."""
    import twitchio.eventsub.websockets
    import twitchio.http

    monkeypatch.setattr(twitchio.http.Route, "BASE", twitchio.http.Route.BASE)
    monkeypatch.setattr(twitchio.http.Route, "ID_BASE", twitchio.http.Route.ID_BASE)
    monkeypatch.setattr(twitchio.eventsub.websockets, "WSS", twitchio.eventsub.websockets.WSS)


async def _fail_logged(settings: TwitchSettings, tmp_path: Path, name: str) -> str:
    """Start the Twitch client, expect it to fail, log the failure; all text it produced."""
    log_path = tmp_path / f"{name}.log"
    with debug_log_file(log_path):
        try:
            async with TwitchChat(
                settings, asyncio.Queue(), time.time(), token_file=tmp_path / f"{name}.json",
                request_timeout_s=5.0,
            ):  # fmt: skip
                pass
        except ChatlingError as exc:  # a TwitchError naming the cause, never a raw OSError
            logging.getLogger("chatling").exception("twitch failed: %s", exc)
            text = "".join(traceback.format_exception(exc)) + repr(exc)
        else:
            raise AssertionError("the Twitch client started against a bad endpoint")
    return text + log_path.read_text("utf-8")


async def test_bad_twitch_url_fails_without_leaking(
    tmp_path: Path, restore_twitchio: None, capfd: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    base = f"http://127.0.0.1:{port}/"
    text = await _fail_logged(
        _twitch_settings(base, base + "helix/", f"ws://127.0.0.1:{port}/ws"), tmp_path, "closed"
    )
    assert "twitch failed" in text
    assert_clean("twitch bad URL log+traceback", text)
    out, err = capfd.readouterr()
    assert_clean("twitch bad URL output", out + err)
    assert not (tmp_path / "closed.json").exists()


async def test_refused_tokens_fail_without_leaking(
    tmp_path: Path, restore_twitchio: None, capfd: pytest.CaptureFixture[str]
) -> None:
    from devtools.fakes.twitch_server import FakeTwitch

    with FakeTwitch() as fake:  # knows none of the planted tokens: validate 401, refresh 400
        text = await _fail_logged(
            _twitch_settings(fake.base, fake.helix_base, fake.wss), tmp_path, "refused"
        )
        sent = fake.token_requests
    assert "chatling auth twitch" in text
    assert sent and sent[0]["refresh_token"] == PLANTED["CHATLING_TWITCH__REFRESH_TOKEN"]
    assert_clean("twitch refused tokens log+traceback", text)
    out, err = capfd.readouterr()
    assert_clean("twitch refused tokens output", out + err)


# -- the token file ----------------------------------------------------------------------------


def _tokens() -> auth.Tokens:
    return auth.Tokens(
        SecretStr(PLANTED["CHATLING_TWITCH__BOT_TOKEN"]),
        SecretStr(PLANTED["CHATLING_TWITCH__REFRESH_TOKEN"]),
        scopes=auth.BOT_SCOPES,
        user_id="1001",
        login="chatling_bot",
    )


def test_token_file_is_private_and_damaged_files_are_not_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "data" / "twitch-tokens.json"
    old = os.umask(0)
    try:
        auth.save_tokens(path, _tokens())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)  # a file someone loosened: the next save makes it private again
        auth.save_tokens(path, _tokens())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert [p.name for p in path.parent.iterdir()] == ["twitch-tokens.json"]
    assert auth.load_tokens(path) == _tokens()
    assert_clean("token repr", repr(_tokens()) + str(_tokens()))
    # A truncated token file is refused without quoting what it holds.
    path.write_text(path.read_text("utf-8")[:60], encoding="utf-8")
    with pytest.raises(ChatlingError) as failed:
        auth.load_tokens(path)
    assert str(path) in str(failed.value)
    assert_clean("damaged token file error", str(failed.value) + repr(failed.value))
    assert_clean("token file logs", caplog.text)
