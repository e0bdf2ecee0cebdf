"""The ``chatling`` command as a user runs it: help, config check, and bad input.

Each bad input must give one clear line naming the file, exit code 2, and no
traceback; and it must fail before the slow engine start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from chatling.core.paths import PROJECT_ROOT

CLIP = PROJECT_ROOT / "data" / "demo" / "clip.opus"
CLIP_CHAT = PROJECT_ROOT / "data" / "demo" / "clip_chat.json"


def chatling(
    *args: str, env: dict[str, str] | None = None, cwd=None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatling", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or PROJECT_ROOT,
        env={**os.environ, **(env or {})},
    )


def test_help_explains_replay() -> None:
    out = chatling("replay", "--help")
    assert out.returncode == 0
    assert "--speed" in out.stdout and "chat log" in out.stdout


def test_config_check_masks_secrets(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "CHATLING_TWITCH__BOT_TOKEN=oauth-planted-token-123\nCHATLING_REPLY__BOT_NAME=dougbot\n"
    )
    out = chatling(
        "--env-file",
        str(env_file),
        "config",
        "check",
        env={"CHATLING_DISCORD__TOKEN": "discord-planted-secret"},
    )
    assert out.returncode == 0, out.stderr
    assert "planted" not in out.stdout + out.stderr
    shown = json.loads(out.stdout)
    assert shown["reply"]["bot_name"] == "dougbot"
    assert shown["twitch"]["bot_token"] == "**********"
    assert shown["discord"]["token"] == "**********"


def test_invalid_setting_is_one_clear_line(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CHATLING_REPLY__CANDIDATES=many\n")
    out = chatling("--env-file", str(env_file), "config", "check")
    assert out.returncode == 2
    assert "reply.candidates" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "case",
    ["truncated_chat", "wrong_format_chat", "corrupt_audio", "missing_model", "missing_audio"],
)
def test_bad_input_fails_fast_with_the_file_named(case, tmp_path) -> None:
    audio, chat, env = str(CLIP), str(CLIP_CHAT), {}
    if case == "truncated_chat":
        bad = tmp_path / "chat-cut.json"
        bad.write_bytes(CLIP_CHAT.read_bytes()[:5000])
        chat, name = str(bad), "chat-cut.json"
    elif case == "wrong_format_chat":
        bad = tmp_path / "settings.json"
        bad.write_text(json.dumps({"volume": 3, "theme": "dark"}))
        chat, name = str(bad), "settings.json"
    elif case == "corrupt_audio":
        bad = tmp_path / "stream.opus"
        bad.write_bytes(b"OggS\x00\x02" + os.urandom(4000))
        audio, name = str(bad), "stream.opus"
    elif case == "missing_audio":
        audio, name = str(tmp_path / "nope.mp4"), "nope.mp4"
    else:
        env, name = {"CHATLING_MODEL__NAME": str(tmp_path / "no-such-model")}, "no-such-model"
    started = time.monotonic()
    out = chatling(
        "replay", "--audio", audio, "--chat", chat, "--db", str(tmp_path / "x.sqlite"), env=env
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("chatling: error:")]
    assert len(errors) == 1 and name in errors[0], out.stderr[-2000:]
    assert "error" not in out.stdout.lower(), out.stdout[-2000:]
    assert time.monotonic() - started < 60, "must fail before the engine starts"
    assert not (tmp_path / "x.sqlite").exists(), "nothing should be created for bad input"


def test_a_chat_log_that_cannot_be_read_is_an_error_on_stderr(tmp_path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"volume": 3}))
    out = chatling("data", "inspect", str(bad))
    assert out.returncode == 2
    assert out.stdout == "", "stdout is for the summary; the error goes to stderr"
    errors = [line for line in out.stderr.splitlines() if line.startswith("chatling: error:")]
    assert len(errors) == 1 and str(bad) in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
