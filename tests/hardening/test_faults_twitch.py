"""Faults at Twitch: the real client (chatling/twitch) against a fake Twitch that misbehaves.

Each case scripts tests/hardening/twitch_faults.py (``FaultyTwitch``): bursts of
HTTP 5xx on sends and subscriptions, slow answers, malformed websocket frames,
a revoked token. What must hold: the client recovers (chat flows again, on as
few connections as the fault needs) or stops with one message that says to run
``chatling auth twitch``; and it never retries in a loop: the requests counted
at the fake stay bounded.

Run: ``.venv/bin/python -m pytest tests/hardening/test_faults_twitch.py``
(``CHATLING_HARDENING_FULL=1`` adds the 10-second send timeout case and writes
tests/hardening/results/faults_twitch.json).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from chatling.core.errors import TwitchAuthError, TwitchError
from chatling.core.events import ChatMessage
from chatling.core.settings import TwitchSettings
from chatling.platforms.twitch.client import TwitchChat
from tests.hardening.common import FULL, write_results
from tests.hardening.twitch_faults import FaultyTwitch

pytestmark = [pytest.mark.hardening]

RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    if RESULTS:
        write_results("faults_twitch", RESULTS)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyTwitch]:
    with FaultyTwitch() as server:
        server.patch_twitchio(monkeypatch)
        yield server


@pytest.fixture
def settings(fake: FaultyTwitch) -> TwitchSettings:
    access, refresh = fake.issue_tokens()
    return TwitchSettings(
        channel=fake.broadcaster.login,
        bot_login=fake.bot.login,
        client_id=fake.client_id,
        bot_token=SecretStr(access),
        refresh_token=SecretStr(refresh),
    )


def chat(settings: TwitchSettings, tmp_path: Path, **options: Any) -> TwitchChat:
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=1000)
    return TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json", **options)


async def until(condition: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def read(c: TwitchChat, n: int = 1) -> list[str]:
    assert c.inbox is not None
    return [(await asyncio.wait_for(c.inbox.get(), 10)).text for _ in range(n)]


# -- HTTP 5xx ------------------------------------------------------------------------------------


async def test_5xx_burst_on_send_fails_those_messages_only(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with chat(settings, tmp_path) as c:
        fake.fail_next("send", 4, 503)
        fake.fail_next("send", 1, 500)
        results = [await c.sink.send(f"reply {i}", None) for i in range(7)]
    assert results == [False] * 5 + [True] * 2
    assert fake.hits["send"] == 7, "a failed send must not be retried in a loop"
    assert "HTTP 503" in caplog.text and "HTTP 500" in caplog.text
    RESULTS["send_5xx"] = {"burst": 5, "sends": 7, "requests": fake.hits["send"], "delivered": 2}


async def test_5xx_on_subscription_at_start_is_one_clear_error(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    fake.fail_next("subscribe", 3, 502)  # (twitchio itself retries a 503 once, after 3 s)
    with pytest.raises(TwitchError, match="HTTP 502") as failed:
        async with chat(settings, tmp_path):
            pass
    assert "subscribing to the chat of #streamer" in str(failed.value)
    assert fake.hits["subscribe"] == 1
    RESULTS["subscribe_5xx_at_start"] = {"error": str(failed.value), "requests": 1}


async def test_5xx_burst_on_resubscription_recovers_with_backoff(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    async with chat(settings, tmp_path) as c:
        await fake.send_chat("before")
        assert await read(c) == ["before"]
        fake.fail_next("subscribe", 3, 502)
        dropped = time.monotonic()
        await fake.close_sockets(code=4000)
        await until(lambda: len(fake.subscriptions) == 2, "a new subscription", within_s=40)
        back_s = time.monotonic() - dropped
        await fake.send_chat("after")
        assert await read(c) == ["after"]
    times = fake.hit_times["subscribe"]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times[1:])]
    assert fake.hits["subscribe"] == 5  # start, 3 refused, 1 accepted
    assert fake.hits["ws"] <= 5
    assert all(g >= 1.5 for g in gaps), f"no backoff between retries: {gaps}"
    RESULTS["subscribe_5xx_after_drop"] = {
        "burst": 3,
        "subscription_requests": fake.hits["subscribe"],
        "websocket_connections": fake.hits["ws"],
        "gaps_between_retries_s": gaps,
        "chat_back_after_s": round(back_s, 1),
    }


# -- slow answers -------------------------------------------------------------------------------


async def test_slow_subscription_at_start_times_out_with_a_clear_error(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    fake.delay["subscribe"] = 3.0
    started = time.monotonic()
    with pytest.raises(TwitchError, match="did not answer within 2 s"):
        async with chat(settings, tmp_path, request_timeout_s=2.0):
            pass
    took = time.monotonic() - started
    assert took < 5.0
    RESULTS["slow_subscription_at_start"] = {"timeout_s": 2.0, "gave_up_after_s": round(took, 1)}


async def test_slow_validate_at_start_times_out(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    fake.delay["validate"] = 3.0
    started = time.monotonic()
    with pytest.raises(TwitchError, match="did not answer"):
        async with chat(settings, tmp_path, request_timeout_s=2.0):
            pass
    assert time.monotonic() - started < 5.0
    assert fake.hits["validate"] == 1


@pytest.mark.skipif(not FULL, reason="waits for the sink's 10 s timeout (full mode only)")
async def test_slow_send_gives_up_after_its_timeout_and_the_next_goes_through(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with chat(settings, tmp_path) as c:
        fake.delay["send"] = 12.0
        started = time.monotonic()
        assert await c.sink.send("slow", None) is False
        took = time.monotonic() - started
        fake.delay.clear()
        assert await c.sink.send("fast again", None) is True
    assert 9.0 < took < 11.5
    assert "TimeoutError" in caplog.text
    RESULTS["slow_send"] = {"gave_up_after_s": round(took, 1), "requests": fake.hits["send"]}


# -- malformed frames ---------------------------------------------------------------------------

BAD_FRAMES = [
    "this is not json",
    "{}",
    "[1, 2, 3]",
    '"a string"',
    "null",
    '{"metadata": {}}',
    '{"metadata": {"message_type": "mystery"}, "payload": {}}',
    '{"metadata": {"message_type": "notification"}, "payload": {}}',
    json.dumps(
        {
            "metadata": {
                "message_type": "notification",
                "subscription_type": "channel.unknown.thing",
                "subscription_version": "1",
            },
            "payload": {"subscription": {}, "event": {}},
        }
    ),
    json.dumps(
        {
            "metadata": {
                "message_type": "notification",
                "subscription_type": "channel.chat.message",
                "subscription_version": "1",
            },
            "payload": {"subscription": {"type": "channel.chat.message"}, "event": {"x": 1}},
        }
    ),
]


async def test_malformed_frames_are_skipped_without_losing_chat_or_the_socket(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with chat(settings, tmp_path) as c:
        for i, frame in enumerate(BAD_FRAMES):
            await fake.send_chat(f"good {i}")
            await fake.send_raw([frame])
        await fake.send_chat("last")
        texts = await read(c, len(BAD_FRAMES) + 1)
    assert texts == [f"good {i}" for i in range(len(BAD_FRAMES))] + ["last"]
    assert fake.hits["ws"] == 1 and len(fake.subscriptions) == 1, "the client reconnected"
    assert "malformed frame" in caplog.text
    RESULTS["malformed_frames"] = {
        "frames": len(BAD_FRAMES),
        "chat_messages_between": len(BAD_FRAMES) + 1,
        "chat_received": len(texts),
        "websocket_connections": fake.hits["ws"],
    }


# -- revoked token ------------------------------------------------------------------------------


async def test_revoked_token_at_start_says_to_reauthorise(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    fake.access.clear()
    fake.refresh.clear()
    with pytest.raises(TwitchError, match="chatling auth twitch"):
        async with chat(settings, tmp_path):
            pass
    assert fake.hits["validate"] == 1 and fake.hits["token"] == 1
    assert fake.hits["subscribe"] == 0


async def test_token_revoked_while_running_stops_sending_and_reading_once(
    fake: FaultyTwitch, settings: TwitchSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with chat(settings, tmp_path) as c:
        await fake.send_chat("before")
        assert await read(c) == ["before"]
        assert await c.sink.send("hello", None) is True
        fake.access.clear()  # the user revoked the bot's authorisation
        fake.refresh.clear()
        assert await c.sink.send("after the revocation", None) is False
        sends, tokens = fake.hits["send"], fake.hits["token"]
        for _ in range(5):  # no further request: the sink knows the token is gone
            assert await c.sink.send("again", None) is False
        assert fake.hits["send"] == sends and fake.hits["token"] == tokens
        await fake.revoke_subscriptions()  # Twitch ends the subscriptions too
        await until(lambda: c.failed is not None, "the client to give up")
        await asyncio.sleep(8.0)  # long enough for several retries, were there any
    assert isinstance(c.failed, TwitchAuthError)
    assert "chatling auth twitch" in caplog.text
    counts = {k: fake.hits[k] for k in ("ws", "subscribe", "token", "send", "validate")}
    assert counts["ws"] <= 2 and counts["subscribe"] <= 2, counts
    assert counts["token"] <= 3 and counts["send"] == 2, counts
    RESULTS["revoked_while_running"] = {"requests_after_8s": counts, "error": str(c.failed)}
