"""Tests of live Twitch (chatling/platforms/twitch/): real twitchio 3.3.2 against a fake Twitch.

The fake (devtools/fakes/twitch_server.py) serves Helix, id.twitch.tv and the
EventSub websocket on 127.0.0.1 from its own thread; twitchio's three base
URLs are pointed at it, so nothing here touches the network. The moderator
command tests use ``RecordingControl`` in place of the pipeline: the
``BotControl`` protocol is three methods, and a real pipeline needs the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.core.settings import TwitchSettings
from chatling.platforms.twitch import auth
from chatling.platforms.twitch.client import TwitchChat
from chatling.platforms.twitch.commands import Command, MarkCommands, parse_command
from chatling.platforms.twitch.sink import SendGate, rate_limit_reset
from chatling.store import Store
from devtools.fakes.twitch_server import FakeTwitch


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwitch]:
    with FakeTwitch() as server:
        server.patch_twitchio(monkeypatch)
        yield server


def make_settings(fake: FakeTwitch, access: str, refresh: str, **extra: object) -> TwitchSettings:
    return TwitchSettings(
        channel=fake.broadcaster.login,
        bot_login=fake.bot.login,
        client_id=fake.client_id,
        bot_token=SecretStr(access),
        refresh_token=SecretStr(refresh),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def settings(fake: FakeTwitch) -> TwitchSettings:
    return make_settings(fake, *fake.issue_tokens())


async def until(condition: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    """Wait for a condition on the fake's recorded state (it lives in another thread)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def next_message(inbox: asyncio.Queue[ChatMessage]) -> ChatMessage:
    return await asyncio.wait_for(inbox.get(), timeout=10)


class RecordingControl:
    """Stands in for the pipeline's ``BotControl`` (pause/resume/status_line)."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pause(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume(self) -> None:
        self.paused = False
        self.calls.append("resume")

    def status_line(self) -> str:
        self.calls.append("status")
        return f"chatling is {'paused' if self.paused else 'active'}: 3 replies posted"


# -- 1. a message in, a reply out ---------------------------------------------------------


async def test_chat_message_arrives_with_its_fields_and_a_reply_is_posted(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    token_file = tmp_path / "tokens.json"
    async with TwitchChat(settings, inbox, time.time() - 42.0, token_file=token_file) as chat:
        mid = await fake.send_chat(
            "hello chatling Kappa how are you",
            chatter="viewer1",
            display_name="Viewer_One",
            badges=["subscriber", "vip"],
            emotes=["Kappa"],
            reply_to="parent-123",
        )
        msg = await next_message(inbox)
        assert msg == ChatMessage(
            offset=msg.offset,
            user="viewer1",
            text="hello chatling Kappa how are you",
            display_name="Viewer_One",
            message_id=mid,
            emotes=("Kappa",),
            is_bot=False,
            source="twitch",
            badges=("subscriber", "vip"),
            parent_message_id="parent-123",
            parent_text="earlier message",
            parent_user=fake.broadcaster.login,
        )
        assert 42.0 <= msg.offset < 100.0

        assert await chat.sink.send("hi there viewer1", msg) is True
        post = fake.chat_posts[-1]
        assert post.body == {
            "broadcaster_id": fake.broadcaster.id,
            "sender_id": fake.bot.id,
            "message": "hi there viewer1",
            "reply_parent_message_id": mid,
        }
        assert post.token == settings.bot_token.get_secret_value()
        assert await chat.sink.send("not a reply", None) is True
        assert "reply_parent_message_id" not in fake.chat_posts[-1].body

        await fake.send_chat("beep boop", chatter=fake.bot.login)
        await fake.send_chat("!discord", chatter="Nightbot")
        own, known = await next_message(inbox), await next_message(inbox)
        assert own.is_bot and own.user == fake.bot.login
        assert known.is_bot and known.user == "nightbot"
    # the token file was written, private, and holds the bot's identity
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    saved = auth.load_tokens(token_file)
    assert saved is not None and saved.user_id == fake.bot.id and saved.login == fake.bot.login


# -- 2. flood -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_flood_of_1000_all_arrive_in_order_while_keepalives_are_read(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    """1,000 messages in 10 s while the consumer stalls for 22 s with a 100-slot inbox.

    22 s is past twitchio's keepalive watchdog (no message for 10 + 5 s,
    checked every 10 s): a reader that waited for room in the inbox would be
    reconnected (a second connection and subscription on the fake).
    """
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json") as chat:
        flood = asyncio.create_task(fake.flood(1000, 10.0))
        await asyncio.sleep(22.0)  # the pipeline is busy; nobody drains the inbox
        await flood
        # read off the socket regardless: 100 in the inbox, 1 waiting to go in, 899 buffered
        assert inbox.full() and chat.backlog == 899
        got = [await next_message(inbox) for _ in range(1000)]
    assert [m.text for m in got] == [f"flood {i}" for i in range(1000)]
    assert len(fake.conns) == 1, "the client reconnected: it missed keepalives"
    assert len(fake.subscriptions) == 1


# -- 3. reconnects --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close_frame", "tcp_abort", "unused_4003"])
async def test_dropped_socket_reconnects_and_resubscribes(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path, how: str
) -> None:
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json"):
        await fake.send_chat("before the drop")
        assert (await next_message(inbox)).text == "before the drop"
        if how == "close_frame":
            await fake.close_sockets(code=4000)
        elif how == "unused_4003":  # twitchio gives such a socket up; the supervisor steps in
            await fake.close_sockets(code=4003)
        else:
            await fake.abort_sockets()
        await until(lambda: len(fake.subscriptions) == 2, "a second subscription")
        assert len(fake.conns) == 2
        assert fake.subscriptions[1]["transport"]["session_id"] == fake.conns[1].session_id
        await fake.send_chat("after the drop")
        assert (await next_message(inbox)).text == "after the drop"
        assert all(not c.received for c in fake.conns), "the client sent text to Twitch"


@pytest.mark.slow
async def test_silent_socket_is_replaced_after_the_keepalive_timeout(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    """No keepalive for 10 + 5 s (twitchio checks every 10 s): reconnect and resubscribe."""
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json"):
        await fake.silence_sockets()
        await until(lambda: len(fake.subscriptions) == 2, "a resubscription", within_s=40)
        assert fake.conns[0].closed
        await fake.send_chat("after the silence")
        assert (await next_message(inbox)).text == "after the silence"


async def test_session_reconnect_hands_over_without_losing_messages(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    """Twitch keeps sending to the old socket until the new one is welcomed."""
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json"):
        await fake.request_reconnect(then_on_old=["late 1", "late 2", "late 3"])
        await until(lambda: len(fake.conns) == 2 and fake.conns[0].closed, "the old socket closed")
        assert fake.conns[1].reconnected_from == fake.conns[0].session_id
        assert len(fake.subscriptions) == 1  # carried over by Twitch, not re-created
        await fake.send_chat("on the new socket")
        texts = [(await next_message(inbox)).text for _ in range(4)]
        assert texts == ["late 1", "late 2", "late 3", "on the new socket"]
        # the new socket is the one the client keeps: a later drop still recovers
        await fake.close_sockets(code=4000)
        await until(lambda: len(fake.subscriptions) == 2, "a resubscription after the handover")
        await fake.send_chat("still here")
        assert (await next_message(inbox)).text == "still here"
    assert inbox.empty()


# -- 4. refusals, rate limits, errors ---------------------------------------------------------


async def test_drops_back_off_and_429_waits_for_ratelimit_reset(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatling.platforms.twitch")
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    chat_ = TwitchChat(
        settings, inbox, time.time(), token_file=tmp_path / "t.json", drop_backoff_s=1.5
    )
    async with chat_ as chat:
        sink = chat.sink
        # is_sent: false -> False, the reason logged, nothing sent during the backoff
        drop = {
            "code": "msg_duplicate",
            "message": "Your message is identical to one sent recently.",
        }
        fake.send_script.append(
            (200, {"data": [{"message_id": "", "is_sent": False, "drop_reason": drop}]}, {})
        )
        assert await sink.send("hello", None) is False
        assert "msg_duplicate" in caplog.text and "identical to one sent" in caplog.text
        posts = len(fake.chat_posts)
        assert await sink.send("hello again", None) is False
        assert len(fake.chat_posts) == posts
        await asyncio.sleep(1.6)
        assert await sink.send("hello again", None) is True
        assert len(fake.chat_posts) == posts + 1

        # 429 -> False, and no request before Ratelimit-Reset (unix seconds)
        reset = int(time.time()) + 2
        headers = {
            "Ratelimit-Limit": "20",
            "Ratelimit-Remaining": "0",
            "Ratelimit-Reset": str(reset),
        }
        fake.send_script.append((429, {"error": "Too Many Requests", "status": 429}, headers))
        assert await sink.send("one", None) is False
        posts = len(fake.chat_posts)
        while time.time() < reset - 0.2:
            assert await sink.send("too soon", None) is False
            await asyncio.sleep(0.2)
        assert len(fake.chat_posts) == posts
        await asyncio.sleep(max(0.0, reset - time.time()) + 0.05)
        assert await sink.send("after the reset", None) is True
        assert fake.chat_posts[-1].body["message"] == "after the reset"

        # 5xx -> False with a log line, no crash, no backoff
        fake.send_script.append((503, {"status": 503, "message": "Service Unavailable"}, {}))
        assert await sink.send("server trouble", None) is False
        assert "HTTP 503" in caplog.text
        assert await sink.send("fine again", None) is True


async def test_expired_token_is_refreshed_saved_and_the_send_retried(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    token_file = tmp_path / "t.json"
    async with TwitchChat(settings, inbox, time.time(), token_file=token_file) as chat:
        old = settings.bot_token.get_secret_value()
        fake.access.pop(old)  # Twitch expires the token
        assert await chat.sink.send("after expiry", None) is True
        new = fake.chat_posts[-1].token
        assert new != old and new in fake.access
        saved = auth.load_tokens(token_file)
        assert saved is not None and saved.access_token.get_secret_value() == new
        # chat still flows (twitchio got the new token too)
        await fake.send_chat("still reading")
        assert (await next_message(inbox)).text == "still reading"


# -- 5. secrets -------------------------------------------------------------------------------


async def test_tokens_never_appear_in_logs_or_errors(
    fake: FakeTwitch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, twitchio and aiohttp included
    access, refresh = fake.issue_tokens(access="plantedACCESS0123456789abcdef")
    refresh_planted = refresh
    settings = make_settings(fake, access, refresh)
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json") as chat:
        await fake.send_chat("hi")
        await next_message(inbox)
        assert await chat.sink.send("hello", None)
        # Twitch revokes both tokens, then drops the socket: twitchio's resubscription
        # fails, refreshes through a URL that holds the refresh token, and logs the error
        fake.access.clear()
        fake.refresh.clear()
        await fake.close_sockets(code=4000)
        await until(lambda: len(fake.conns) == 2, "the reconnection")
        await until(lambda: "resubscribe" in caplog.text, "twitchio's resubscription error")
        assert await chat.sink.send("with revoked tokens", None) is False
    with pytest.raises(auth.TwitchError) as failed:
        async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "none.json"):
            pass
    assert "chatling auth twitch" in str(failed.value)
    texts = [caplog.text, str(failed.value), repr(failed.value)]
    texts += [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    for secret in (access, refresh_planted):
        assert not any(secret in t for t in texts)
    assert "**********" in caplog.text  # twitchio did try to log a secret: it was scrubbed


# -- 6. moderator commands -------------------------------------------------------------------


async def test_moderator_commands_only_for_mods_and_broadcaster(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    control = RecordingControl()
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    async with TwitchChat(settings, inbox, time.time(), token_file=tmp_path / "t.json") as chat:
        chat.control = control  # attached after start, as `chatling run` does
        for badges in ([], ["vip"], ["subscriber"]):
            await fake.send_chat("!chatling pause", chatter="viewer9", badges=badges)
            assert (await next_message(inbox)).text == "!chatling pause"  # still stored as chat
        assert control.calls == [] and fake.chat_posts == []

        mid = await fake.send_chat("!chatling pause", chatter="mod1", badges=["moderator"])
        await next_message(inbox)
        await until(lambda: len(fake.chat_posts) == 1, "the pause answer")
        assert control.paused and control.calls == ["pause"]
        assert "paused" in fake.chat_posts[0].body["message"]
        assert fake.chat_posts[0].body["reply_parent_message_id"] == mid

        await fake.send_chat(
            "!Chatling STATUS", chatter=fake.broadcaster.login, badges=["broadcaster"]
        )
        await next_message(inbox)
        await until(lambda: len(fake.chat_posts) == 2, "the status answer")
        assert fake.chat_posts[1].body["message"] == "chatling is paused: 3 replies posted"

        await fake.send_chat("!chatling resume", chatter="mod1", badges=["moderator"])
        await next_message(inbox)
        await until(lambda: len(fake.chat_posts) == 3, "the resume answer")
        assert not control.paused and control.calls == ["pause", "status", "resume"]

        await fake.send_chat("!chatling pause", chatter=fake.bot.login, badges=["moderator"])
        await next_message(inbox)  # the bot's own message never runs a command
    assert control.calls == ["pause", "status", "resume"]


async def test_inbox_attached_later_gets_what_was_held_in_order(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path
) -> None:
    """`chatling run` builds the pipeline (and its inbox) after the sink exists."""
    async with TwitchChat(settings, None, time.time(), token_file=tmp_path / "t.json") as chat:
        for i in range(3):
            await fake.send_chat(f"early {i}")
        await until(lambda: chat.backlog == 3, "three held messages")
        inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=2)
        control = RecordingControl()
        chat.attach(inbox, control=control)
        await fake.send_chat("later")
        texts = [(await next_message(inbox)).text for _ in range(4)]
        assert texts == ["early 0", "early 1", "early 2", "later"]
        await fake.send_chat("!chatling status", chatter="mod1", badges=["moderator"])
        await next_message(inbox)
        await until(lambda: control.calls == ["status"], "the attached control to be used")


# -- 7. feedback marks and deletions (into a real SQLite store) ---------------------------------


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "chatling.sqlite", flush_interval_s=0.05) as st:
        yield st


def feedback_rows(store: Store) -> list[tuple[object, ...]]:
    """The feedback table as another reader of the SQLite file sees it."""
    with sqlite3.connect(store.path) as db:
        return db.execute(
            "SELECT target_message_id, target_text, mark, by_user, source FROM feedback ORDER BY id"
        ).fetchall()


async def test_moderator_marks_on_the_bots_messages_are_stored(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path, store: Store
) -> None:
    sid = await store.start_stream("live", "twitch", fake.broadcaster.login)
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    marks = MarkCommands(good="!good", bad="!Bad")
    async with TwitchChat(
        settings,
        inbox,
        time.time(),
        token_file=tmp_path / "t.json",
        store=store,
        stream_id=sid,
        marks=marks,
    ):
        bot = fake.bot.login
        first = await fake.send_chat("geese are the best birds", chatter=bot)
        second = await fake.send_chat("honk if you love honking", chatter=bot)
        # Twitch puts "@<parent login>" before a reply's text; commands are case-blind.
        await fake.send_chat(
            f"@{bot} !bad that is not true",
            chatter="mod1",
            badges=["moderator"],
            reply_to=first,
            parent_login=bot,
            parent_body="geese are the best birds",
        )
        await fake.send_chat(
            "!GOOD",
            chatter=fake.broadcaster.login,
            badges=["broadcaster"],
            reply_to=second,
            parent_login=bot,
            parent_body="honk if you love honking",
        )
        texts = [(await next_message(inbox)).text for _ in range(4)]
        assert texts[2] == f"@{bot} !bad that is not true"  # still chat, on the inbox
        await store.flush()
        assert feedback_rows(store) == [
            (first, "geese are the best birds", "bad", "mod1", "twitch"),
            (second, "honk if you love honking", "good", fake.broadcaster.login, "twitch"),
        ]
    assert fake.chat_posts == []  # a mark gets no answer in chat


async def test_marks_by_viewers_or_on_others_messages_are_ignored(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path, store: Store
) -> None:
    sid = await store.start_stream("live", "twitch", fake.broadcaster.login)
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    chat_ = TwitchChat(
        settings, inbox, time.time(), token_file=tmp_path / "t.json", store=store, stream_id=sid
    )
    async with chat_:
        bot = fake.bot.login
        post = await fake.send_chat("geese are the best birds", chatter=bot)
        viewer = await fake.send_chat("i like ducks", chatter="viewer2")
        reply = {"reply_to": post, "parent_login": bot, "parent_body": "geese are the best birds"}
        for badges in ([], ["vip"], ["subscriber"]):  # not moderators
            await fake.send_chat(f"@{bot} !bad", chatter="viewer9", badges=badges, **reply)
        await fake.send_chat(  # a moderator, but on a viewer's message
            "@viewer2 !bad", chatter="mod1", badges=["moderator"], reply_to=viewer,
            parent_login="viewer2", parent_body="i like ducks",
        )  # fmt: skip
        await fake.send_chat("!bad", chatter="mod1", badges=["moderator"])  # not a reply
        await fake.send_chat(f"@{bot} bad bot !bad", chatter="mod1", badges=["moderator"], **reply)
        await fake.send_chat(f"@{bot} !bad", chatter=bot, badges=["moderator"], **reply)
        # The one mark that counts, last: everything before it was seen and ignored.
        await fake.send_chat(f"@{bot} !good", chatter="mod1", badges=["moderator"], **reply)
        for _ in range(10):
            await next_message(inbox)
        await store.flush()
        assert feedback_rows(store) == [
            (post, "geese are the best birds", "good", "mod1", "twitch")
        ]


async def test_deleted_messages_are_stamped_in_the_store(
    fake: FakeTwitch, settings: TwitchSettings, tmp_path: Path, store: Store
) -> None:
    sid = await store.start_stream("live", "twitch", fake.broadcaster.login)
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    chat_ = TwitchChat(
        settings, inbox, time.time(), token_file=tmp_path / "t.json", store=store, stream_id=sid
    )
    async with chat_:
        assert {s["type"] for s in fake.subscriptions} == {
            "channel.chat.message",
            "channel.chat.message_delete",
        }
        kept = await fake.send_chat("a fine message", chatter="viewer1")
        gone = await fake.send_chat("something rude", chatter="viewer2")
        for _ in range(2):  # the pipeline's part: log what chat says
            store.add_chat(sid, await next_message(inbox))
        await fake.delete_message(gone, chatter="viewer2")
        await until(lambda: store.committed.deleted == 1, "the deletion in the store")
        await fake.send_chat("after the deletion")
        assert (await next_message(inbox)).text == "after the deletion"
    with sqlite3.connect(store.path) as db:
        rows = dict(db.execute("SELECT message_id, deleted_at FROM chat_messages").fetchall())
    assert rows[kept] is None
    assert rows[gone] is not None and abs(rows[gone] - time.time()) < 60


async def test_refused_delete_subscription_is_one_warning_and_chat_goes_on(
    fake: FakeTwitch,
    settings: TwitchSettings,
    tmp_path: Path,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chatling.platforms.twitch")
    fake.refuse_types = {"channel.chat.message_delete"}
    sid = await store.start_stream("live", "twitch", fake.broadcaster.login)
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue(maxsize=100)
    chat_ = TwitchChat(
        settings, inbox, time.time(), token_file=tmp_path / "t.json", store=store, stream_id=sid
    )
    async with chat_:
        await fake.send_chat("still reading")
        assert (await next_message(inbox)).text == "still reading"
        await fake.close_sockets(code=4003)  # the supervisor subscribes again on a new socket
        await until(lambda: len(fake.refused) == 2, "a second refused subscription")
        await until(lambda: len(fake.subscriptions) == 2, "the chat resubscription")
        await fake.send_chat("after the resubscription")
        assert (await next_message(inbox)).text == "after the resubscription"
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "deleted" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Twitch refused" in warnings[0].getMessage()


def test_mark_commands_parse() -> None:
    marks = MarkCommands()
    assert marks.parse("!good") == "good"
    assert marks.parse("@chatling_bot !BAD not funny") == "bad"
    assert marks.parse("@chatling_bot good one") is None
    assert marks.parse("!goodnight") is None
    assert marks.parse("") is None and marks.parse("@someone") is None
    assert MarkCommands(good="+1", bad="-1").parse("@x -1") == "bad"


def test_parse_command() -> None:
    assert parse_command("!chatling pause", "!chatling") is Command.PAUSE
    assert parse_command("  !CHATLING Resume now", "!chatling") is Command.RESUME
    assert parse_command("!chatling", "!chatling") is Command.HELP
    assert parse_command("!chatling dance", "!chatling") is Command.HELP
    assert parse_command("!chatlingpause", "!chatling") is None
    assert parse_command("hey !chatling pause", "!chatling") is None


# -- sink decisions (pure) ---------------------------------------------------------------------


def test_send_gate_holds_platform_limit_and_blocks() -> None:
    gate = SendGate(capacity=3, window_s=30.0)
    assert [gate.refusal(0.0) is None and gate.acquire(0.0) for _ in range(4)] == [True] * 3 + [
        False
    ]
    assert gate.refusal(29.9) is not None and gate.refusal(30.0) is None
    gate.block(100.0, "Twitch dropped a message (msg_ratelimit)")
    assert "msg_ratelimit" in (gate.refusal(99.0) or "")
    gate.block(50.0, "earlier")  # a shorter block never shortens a longer one
    assert gate.refusal(99.0) is not None and gate.refusal(100.0) is None


def test_rate_limit_reset_header() -> None:
    assert rate_limit_reset({"Ratelimit-Reset": "1000"}, now=990.0, fallback_s=30) == 1000.0
    assert rate_limit_reset({}, now=990.0, fallback_s=30) == 1020.0
    assert rate_limit_reset({"Ratelimit-Reset": "junk"}, now=990.0, fallback_s=30) == 1020.0
    assert rate_limit_reset({"Ratelimit-Reset": "900"}, now=990.0, fallback_s=30) == 991.0


# -- auth -----------------------------------------------------------------------------------


async def test_device_code_login_polls_until_granted_and_saves_privately(
    fake: FakeTwitch, tmp_path: Path
) -> None:
    shown: list[str] = []
    token_file = tmp_path / "data" / "twitch-tokens.json"
    tokens = await auth.device_code_login(
        fake.client_id,
        token_file=token_file,
        id_base=fake.base,
        show=shown.append,
        channel="streamer",
    )
    assert fake.device_polls == 3  # two authorization_pending, then the token
    assert tokens.user_id == fake.bot.id and tokens.login == fake.bot.login
    assert set(auth.BOT_SCOPES) <= set(tokens.scopes)
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert auth.load_tokens(token_file) == tokens
    assert [p.name for p in token_file.parent.iterdir()] == ["twitch-tokens.json"]  # no temp left
    text = "\n".join(shown)
    assert "FAKECODE" in text and "twitch.tv/activate" in text
    assert "channel:bot" in text and f"/mod {fake.bot.login}" in text
    assert tokens.access_token.get_secret_value() not in text + repr(tokens)


async def test_refresh_gives_a_new_pair_and_a_used_refresh_token_fails_cleanly(
    fake: FakeTwitch,
) -> None:
    import aiohttp

    access, refresh = fake.issue_tokens()
    tokens = auth.Tokens(SecretStr(access), SecretStr(refresh), user_id=fake.bot.id, login="x")
    async with aiohttp.ClientSession() as session:
        new = await auth.refresh(fake.client_id, tokens, session=session, id_base=fake.base)
        assert new.access_token.get_secret_value() in fake.access
        assert new.user_id == fake.bot.id
        assert fake.token_queries[-1] == {}  # the secrets went in the form body, not the URL
        with pytest.raises(auth.TwitchError, match="chatling auth twitch") as failed:
            await auth.refresh(fake.client_id, tokens, session=session, id_base=fake.base)
    assert refresh not in str(failed.value)


async def test_missing_settings_and_tokens_are_config_errors(
    fake: FakeTwitch, tmp_path: Path
) -> None:
    inbox: asyncio.Queue[ChatMessage] = asyncio.Queue()
    with pytest.raises(ConfigError, match="CHATLING_TWITCH__CHANNEL"):
        async with TwitchChat(TwitchSettings(client_id="x"), inbox, 0.0):
            pass
    no_token = TwitchSettings(channel="streamer", client_id=fake.client_id)
    with pytest.raises(ConfigError, match="chatling auth twitch"):
        async with TwitchChat(no_token, inbox, 0.0, token_file=tmp_path / "absent.json"):
            pass
