"""Twitch's own checks against the fake Twitch (devtools/fakes/twitch_server.py): the
channel's blocked terms merged into the safety filter at start and refreshed, AutoMod
asked before each send when the bot is a moderator, a missing permission one log line.

The real ``TwitchChat`` client and HTTP on 127.0.0.1; only Twitch is a fake (no real
Twitch here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from chatling.core.events import ChatMessage
from chatling.core.settings import TwitchSettings
from chatling.platforms.twitch.client import TwitchChat
from chatling.safety import SafetyFilter
from devtools.fakes.twitch_server import FakeTwitch


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwitch]:
    with FakeTwitch() as server:
        server.patch_twitchio(monkeypatch)
        yield server


def settings_for(fake: FakeTwitch, **extra: object) -> TwitchSettings:
    access, refresh = fake.issue_tokens()
    return TwitchSettings(
        channel=fake.broadcaster.login,
        bot_login=fake.bot.login,
        client_id=fake.client_id,
        bot_token=SecretStr(access),
        refresh_token=SecretStr(refresh),
        **extra,  # type: ignore[arg-type]
    )


def verdict(f: SafetyFilter, text: str) -> str:
    return f.check(text, now=0.0, reply_to_user=None, recent_chat=[]).reason


async def test_blocked_terms_are_merged_at_start_and_refreshed(
    fake: FakeTwitch, tmp_path: Path
) -> None:
    fake.blocked_terms = ["glorbnax", "moon cheese", "snork*"]  # two pages of 2
    safety = SafetyFilter([], bot_name="chatling", prompt_files=[])
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue()
    chat_ = TwitchChat(
        settings_for(fake), inbox, time.time(), token_file=tmp_path / "t.json",
        safety=safety, blocked_terms_refresh_s=0.3,
    )  # fmt: skip
    async with chat_:
        assert verdict(safety, "gl0rbnax!") == "blocked_term:glorbnax"
        assert verdict(safety, "mo0n ch33se") == "blocked_term:moon cheese"
        assert verdict(safety, "snorkelling") == "blocked_term:snork*"
        pages = [q for path, q, _ in fake.moderation_requests if path.endswith("blocked_terms")]
        assert pages[0]["moderator_id"] == fake.bot.id and "after" not in pages[0]
        assert pages[1]["after"] == "2"
        fake.blocked_terms = ["newword"]
        deadline = time.monotonic() + 10
        while verdict(safety, "newword") == "ok":
            assert time.monotonic() < deadline, "refresh never applied"
            await asyncio.sleep(0.1)
        assert verdict(safety, "glorbnax") == "ok"  # removed on Twitch, gone here too
        assert verdict(safety, "hello") == "ok"


async def test_automod_is_asked_before_sending_as_moderator(
    fake: FakeTwitch, tmp_path: Path
) -> None:
    fake.automod_holds = {"heckin"}
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue()
    chat_ = TwitchChat(
        settings_for(fake, is_moderator=True), inbox, time.time(), token_file=tmp_path / "t.json"
    )
    async with chat_ as chat:
        assert await chat.sink.send("what a heckin play", None) is False
        assert await chat.sink.send("what a play", None) is True
        assert [p.body["message"] for p in fake.chat_posts] == ["what a play"]
        asked = [b["data"][0]["msg_text"] for p, _, b in fake.moderation_requests if b]
        assert asked == ["what a heckin play", "what a play"]
        assert chat.moderation is not None and chat.moderation.automod_held == 1


async def test_not_a_moderator_never_asks_automod(fake: FakeTwitch, tmp_path: Path) -> None:
    fake.automod_holds = {"play"}
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue()
    async with TwitchChat(
        settings_for(fake), inbox, time.time(), token_file=tmp_path / "t.json"
    ) as chat:
        assert await chat.sink.send("what a play", None) is True
    assert not [r for r in fake.moderation_requests if r[0].endswith("status")]


async def test_missing_permission_is_one_log_line_not_a_failure(
    fake: FakeTwitch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatling.platforms.twitch")
    fake.moderator_scopes = set()
    fake.blocked_terms = ["glorbnax"]
    safety = SafetyFilter([], bot_name="chatling", prompt_files=[])
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue()
    chat_ = TwitchChat(
        settings_for(fake, is_moderator=True), inbox, time.time(),
        token_file=tmp_path / "t.json", safety=safety, blocked_terms_refresh_s=0.2,
    )  # fmt: skip
    async with chat_ as chat:
        assert await chat.sink.send("hello", None) is True
        assert await chat.sink.send("hello again", None) is True
        await asyncio.sleep(0.5)  # refreshes would have run by now
    refusals = [r for r in caplog.records if "Twitch refused" in r.getMessage()]
    assert len(refusals) == 2, [r.getMessage() for r in refusals]  # one per check, once
    assert any("moderator:read:blocked_terms" in r.getMessage() for r in refusals)
    assert any("moderation:read" in r.getMessage() for r in refusals)
    assert all(r.levelno == logging.WARNING for r in refusals)
    assert verdict(safety, "glorbnax") == "ok"
    assert len(fake.chat_posts) == 2
    # No retry loop: one request each, and no token refresh for a missing scope.
    assert len([r for r in fake.moderation_requests if r[0].endswith("blocked_terms")]) == 1
    assert len([r for r in fake.moderation_requests if r[0].endswith("status")]) == 1
