"""Live Twitch chat for one channel: EventSub in, Helix out, in one ``async with``.

``TwitchChat`` logs the bot account in (token file from ``chatling auth
twitch``, else ``CHATLING_TWITCH__BOT_TOKEN``; refreshed when Twitch rejects
it), subscribes to ``channel.chat.message`` over twitchio 3's EventSub
websocket, turns every notification into a ``chatling.core.events.ChatMessage`` on the
inbox, runs moderators' ``!chatling`` commands, and exposes ``.sink``
(``TwitchSink``) for the pipeline's replies. Given a ``store`` and
``stream_id``, it also records moderators' ``!good`` / ``!bad`` replies to the
bot's messages (``chatling.platforms.twitch.commands``) and subscribes to
``channel.chat.message_delete`` to stamp deleted messages in the store (a
refused subscription is one warning; chat goes on). How ``chatling run`` uses it::

    async with TwitchChat(settings.twitch, None, stream_start=time.time()) as chat:
        pipeline = Pipeline(PipelineParts(..., sink=chat.sink, channel=chat.channel))
        chat.attach(pipeline.inbox, control=pipeline)  # chat held until now flows in
        await pipeline.run()        # until Ctrl-C / EndOfStream
    # leaving the block: websocket closed, messages already read handed to the
    # inbox (for up to drain_timeout_s), HTTP sessions closed. Stop = leave the block
    # (put EndOfStream on the inbox after it, so the pipeline sees every message).

Start-up errors (no token, a revoked token, a missing permission, an unknown
channel) raise ``ConfigError`` / ``TwitchError`` from ``__aenter__`` with a
message that says what to run or grant.

What twitchio 3.3.2 already does and is relied on: reconnect with backoff
(3 s base, 90 s cap, unlimited tries) when the socket closes or errors, a
keepalive watchdog (no message for keepalive_timeout + 5 s -> reconnect), and
resubscription after such a reconnect; background token revalidation and
refresh. What is added here:

- the reader never waits on the bounded inbox: each message goes to an
  unbounded buffer at once and one forwarder task moves them to the inbox in
  order, so a flood cannot starve keepalives (a growing backlog is logged);
- ``session_reconnect``: twitchio stops reading the old socket while it
  connects to the new URL and then closes it, dropping what Twitch sent there
  meanwhile; ``_HandoverWebsocket`` keeps reading the old socket until the
  new one is welcomed and the old one falls quiet;
- a supervisor that resubscribes on a fresh socket (with backoff) when
  twitchio gives a socket up for good (close codes 4001/4003, a revocation),
  or when twitchio's own resubscription after a reconnect failed (a socket
  with no subscription would otherwise stay open and silent); if Twitch
  rejects the bot's token and its refresh, the supervisor stops reading
  (``failed``, one error: run ``chatling auth twitch``) instead of retrying;
- a malformed frame (JSON that is not an EventSub message) is logged and
  skipped; twitchio's reader would otherwise die on it and the socket go deaf;
  and the reader yields to the event loop after every frame (a flood arrives
  in bursts that it would otherwise parse in one go);
- every request to Twitch is bounded by ``request_timeout_s``;
- duplicate deliveries (Twitch sends at least once) are dropped by message id;
- twitchio's loggers are scrubbed of the bot's tokens (``SecretRedactor``);
- Twitch's own checks (``chatling.platforms.twitch.moderation``): the channel's blocked terms
  merged into ``safety`` at start and refreshed, and AutoMod asked before each
  send when the bot is a moderator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import twitchio
from pydantic import SecretStr
from twitchio.eventsub import ChatMessageDeleteSubscription, ChatMessageSubscription
from twitchio.eventsub.websockets import Websocket

from chatling.control import BotControl
from chatling.core.errors import ConfigError, StoreError, TwitchAuthError
from chatling.core.events import ChatMessage
from chatling.core.settings import TwitchSettings
from chatling.platforms.twitch import auth
from chatling.platforms.twitch.auth import SecretRedactor, Tokens, TwitchError, redact
from chatling.platforms.twitch.commands import MarkCommands, ModeratorCommands
from chatling.platforms.twitch.moderation import TwitchModeration
from chatling.platforms.twitch.sink import TwitchSink

if TYPE_CHECKING:
    from chatling.safety import SafetyFilter
    from chatling.store import Store

log = logging.getLogger(__name__)

HANDOVER_QUIET_S = 0.5
"""After a ``session_reconnect`` handover the old socket closes once quiet this long..."""
HANDOVER_MAX_S = 5.0
"""... or after this long at most."""
BACKLOG_WARN = 1_000
RESUBSCRIBE_PAUSE_S = 2.0
"""After twitchio's resubscription on a reconnected socket failed, wait this long."""
_STOP = object()


class _Deleted(str):
    """A deleted message's id on the buffer: stamped in the store in order, after the
    message itself went to the inbox (whose consumer stores it)."""


def _point_twitchio_at(settings: TwitchSettings) -> None:
    """Use other Twitch endpoints when settings name them (Twitch CLI's mock API, tests).

    twitchio reads these three module constants at request/connect time.
    """
    import twitchio.eventsub.websockets
    import twitchio.http

    if settings.helix_url:
        twitchio.http.Route.BASE = settings.helix_url.rstrip("/") + "/"
    if settings.id_url:
        twitchio.http.Route.ID_BASE = settings.id_url.rstrip("/") + "/"
    if settings.eventsub_url:
        twitchio.eventsub.websockets.WSS = settings.eventsub_url


def to_chat_message(
    event: twitchio.ChatMessage, *, offset: float, bot_login: str, known_bots: frozenset[str]
) -> ChatMessage:
    """One ``channel.chat.message`` notification as a chatling ``ChatMessage``."""
    user = (event.chatter.name or "").lower()
    reply = event.reply
    parent_user = (reply.parent_user.name or "").lower() if reply else ""
    return ChatMessage(
        offset=offset,
        user=user,
        text=event.text,
        display_name=event.chatter.display_name,
        message_id=event.id,
        emotes=tuple(f.text for f in event.fragments if f.type == "emote"),
        is_bot=user == bot_login or user in known_bots,
        source="twitch",
        badges=tuple(b.set_id for b in event.badges),
        parent_message_id=reply.parent_message_id if reply else None,
        parent_text=reply.parent_message_body if reply else None,
        parent_user=parent_user or None,
    )


class _YieldingFrames:
    """An aiohttp websocket whose ``receive`` lets the event loop run between frames."""

    __slots__ = ("_ws",)

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def receive(self, *args: Any) -> Any:
        message = await self._ws.receive(*args)
        await asyncio.sleep(0)
        return message


class _HandoverWebsocket(Websocket):
    """twitchio's EventSub websocket, reading on through a ``session_reconnect``."""

    __slots__ = ("_bad_frames", "_handing_over")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handing_over = False
        self._bad_frames = 0

    async def _listen(self) -> None:
        # twitchio reads buffered frames without yielding: during a flood one step
        # of its reader would parse hundreds of them and stall the loop.
        if self._socket is not None and not isinstance(self._socket, _YieldingFrames):
            self._socket = _YieldingFrames(self._socket)  # type: ignore[assignment]
        # twitchio skips non-JSON frames and unknown message types itself, but JSON
        # without EventSub's metadata raises out of its reader and ends it.
        while True:
            try:
                return await super()._listen()
            except (KeyError, TypeError, AttributeError) as exc:
                self._bad_frames += 1
                level = logging.WARNING if self._bad_frames == 1 else logging.DEBUG
                log.log(level, "skipped a malformed frame from Twitch (%r)", exc)

    async def _resubscribe(self) -> None:
        await super()._resubscribe()
        if not self._subscriptions:
            # Every resubscription failed (twitchio logged why): a socket without
            # subscriptions hears nothing. Close it so the supervisor starts afresh,
            # after a pause (Twitch just refused; at once would be refused again).
            log.warning(
                "resubscribing after a reconnect failed; subscribing on a new socket in %.0f s",
                RESUBSCRIBE_PAUSE_S,
            )
            await asyncio.sleep(RESUBSCRIBE_PAUSE_S)
            await self.close()

    async def _process_reconnect(self, data: Any) -> None:
        if self._handing_over:
            return
        self._handing_over = True
        log.info("Twitch moves the chat websocket; connecting to the new URL")
        task = asyncio.create_task(self._handover(data["payload"]["session"]["reconnect_url"]))
        self._connection_tasks.add(task)
        task.add_done_callback(self._connection_tasks.discard)

    async def _create_connection_task(self) -> None:
        if not self._handing_over:  # during a handover the new socket replaces this one
            await super()._create_connection_task()

    async def _handover(self, url: str) -> None:
        new = _HandoverWebsocket(
            keep_alive_timeout=self.keep_alive_timeout,
            reconnect_attempts=self._original_attempts,
            client=self._client,
            token_for=self._token_for,
            http=self._http,
        )
        new._subscriptions = self._subscriptions  # Twitch carries them over to the new URL
        try:
            await new.connect(url=url, fail_once=True)
        except twitchio.WebsocketConnectionException:
            log.warning("could not follow Twitch's reconnect URL; reconnecting from scratch")
            self._handing_over = False
            await self.connect(reconnect=True)
            return
        if self._client is not None and self._token_for is not None:
            self._client._websockets[self._token_for][str(new.session_id)] = new
        # Twitch sends to the old socket until the new one is welcomed: read what is in flight.
        loop = asyncio.get_running_loop()
        deadline, last = loop.time() + HANDOVER_MAX_S, self._last_keepalive
        while loop.time() < deadline:
            await asyncio.sleep(HANDOVER_QUIET_S)
            if self._last_keepalive == last:
                break
            last = self._last_keepalive
        await self.close()
        log.info("chat websocket handed over to session %s", new.session_id)


class _TokenBox:
    """The bot's current tokens (``twitch.sink.TokenSource``); refreshes and saves them."""

    def __init__(self, chat: TwitchChat, tokens: Tokens) -> None:
        self._chat = chat
        self.tokens = tokens
        self._lock = asyncio.Lock()

    def access_token(self) -> str:
        return self.tokens.access_token.get_secret_value()

    async def refresh_access(self, rejected: str) -> str:
        async with self._lock:
            if self.access_token() == rejected:
                new = await self._chat._refresh(self.tokens)
                await self.adopt(new)
                client = self._chat._client
                if client is not None:
                    with self._chat._twitch_errors("handing the refreshed token to twitchio"):
                        await client.add_token(
                            self.access_token(), new.refresh_token.get_secret_value()
                        )
            return self.access_token()

    async def adopt(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._chat._redactor.add(*tokens.secrets())
        await asyncio.to_thread(auth.save_tokens, self._chat.token_file, tokens)


class TwitchChat:
    """One live Twitch channel: see the module docstring for the lifetime."""

    def __init__(
        self,
        settings: TwitchSettings,
        inbox: asyncio.Queue[Any] | None,
        stream_start: float,
        control: BotControl | None = None,
        *,
        token_file: str | Path | None = None,
        drop_backoff_s: float = 30.0,
        keepalive_timeout_s: int = 10,
        drain_timeout_s: float = 5.0,
        request_timeout_s: float = 15.0,
        store: Store | None = None,
        stream_id: int | None = None,
        marks: MarkCommands | None = None,
        safety: SafetyFilter | None = None,
        blocked_terms_refresh_s: float = 600.0,
    ) -> None:
        """``store`` + ``stream_id``: record moderators' marks (``marks``) and deletions;
        ``safety``: the filter the channel's Twitch blocked terms are merged into."""
        if (store is None) != (stream_id is None):
            raise ValueError("give both store and stream_id, or neither")
        self.settings = settings
        self.inbox = inbox
        """Where messages go; ``None`` holds them until ``attach``."""
        self.stream_start = stream_start
        """Wall-clock (``time.time()``) start of the stream: offsets count from it."""
        self.token_file = Path(token_file) if token_file else auth.default_token_file()
        self.drop_backoff_s = drop_backoff_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.request_timeout_s = request_timeout_s
        """Longest wait for one answer from Twitch (login, subscription, refresh)."""
        self.channel = settings.channel.lower().lstrip("#")
        self.known_bots = frozenset(b.casefold() for b in settings.known_bots)
        self.bot_login = settings.bot_login.lower()
        self.bot_id = ""
        self.broadcaster_id = ""
        self.received = 0
        """Messages handed to the inbox."""
        self._control = control
        self._store = store
        self._stream_id = stream_id
        self._marks = marks or MarkCommands()
        self._delete_warned = False
        self._redactor = SecretRedactor()
        self._redactor.add(settings.client_secret.get_secret_value())
        self._stack = contextlib.AsyncExitStack()
        self._client: twitchio.Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tokens: _TokenBox | None = None
        self._sink: TwitchSink | None = None
        self._commands: ModeratorCommands | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._buffer: asyncio.Queue[Any] = asyncio.Queue()
        self._forwarder: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._socket_closed = asyncio.Event()
        self._attached = asyncio.Event()
        if inbox is not None:
            self._attached.set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._warn_at = BACKLOG_WARN
        self._closing = False
        self.failed: TwitchAuthError | None = None
        """Set when Twitch refused the bot's token for good (chat is then no longer read)."""
        self._safety = safety
        self.blocked_terms_refresh_s = blocked_terms_refresh_s
        self.moderation: TwitchModeration | None = None
        """Twitch's blocked terms and AutoMod (available inside the ``async with``)."""
        self._terms_task: asyncio.Task[None] | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def sink(self) -> TwitchSink:
        """Posts as the bot in this channel (available inside the ``async with``)."""
        if self._sink is None:
            raise RuntimeError("TwitchChat.sink is available inside `async with TwitchChat(...)`")
        return self._sink

    @property
    def control(self) -> BotControl | None:
        """What moderators' commands act on; may be set after entering."""
        return self._control

    @control.setter
    def control(self, control: BotControl | None) -> None:
        self._control = control
        if self._commands is not None:
            self._commands.control = control

    def attach(self, inbox: asyncio.Queue[Any], control: BotControl | None = None) -> None:
        """Deliver to ``inbox`` from now on (messages held so far first); set ``control``."""
        self.inbox = inbox
        if control is not None:
            self.control = control
        self._attached.set()

    @property
    def backlog(self) -> int:
        """Messages read from Twitch that wait for room in the inbox."""
        return self._buffer.qsize()

    # -- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> TwitchChat:
        s = self.settings
        if not self.channel:
            raise ConfigError(
                "CHATLING_TWITCH__CHANNEL is empty: set the channel (login) to chat in"
            )
        if not s.client_id:
            raise ConfigError(
                "CHATLING_TWITCH__CLIENT_ID is empty: "
                "create an application at dev.twitch.tv/console"
            )
        _point_twitchio_at(s)
        try:
            await self._start()
        except BaseException as exc:
            await self._stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._closing = True
        if self._client is not None:
            await self._client.close()  # no more events; idempotent
        await asyncio.sleep(0)  # let dispatches already scheduled reach the buffer
        if et is None:
            await self._drain()
        for task in (self._supervisor, self._forwarder, self._terms_task):
            if task is not None:
                task.cancel()
        return await self._stack.__aexit__(et, exc, tb)

    async def _start(self) -> None:
        self._redactor.attach("twitchio")
        self._stack.callback(self._redactor.detach)
        self._session = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout_s))
        )
        tokens = await self._login_tokens()
        self._tokens = _TokenBox(self, tokens)
        self.bot_id = tokens.user_id
        secret = self.settings.client_secret.get_secret_value() or None
        client = twitchio.Client(
            client_id=self.settings.client_id,
            client_secret=secret,
            bot_id=self.bot_id,
            fetch_client_user=False,
        )
        self._client = client
        self._stack.push_async_callback(client.close)
        client.add_listener(self._on_message, event="event_message")
        client.add_listener(self._on_token_refreshed, event="event_token_refreshed")
        client.add_listener(self._on_socket_closed, event="event_websocket_closed")
        if self._store is not None:
            client.add_listener(self._on_message_delete, event="event_message_delete")
        access, refresh = (
            tokens.access_token.get_secret_value(),
            tokens.refresh_token.get_secret_value(),
        )
        with self._twitch_errors("logging in to Twitch"):
            async with asyncio.timeout(self.request_timeout_s * 3):
                await client.login(token=access, load_tokens=False, save_tokens=False)
                await client.add_token(access, refresh)
                users = await client.fetch_users(logins=[self.channel])
        if not users:
            raise ConfigError(
                f"Twitch has no channel {self.channel!r}: check CHATLING_TWITCH__CHANNEL"
            )
        self.broadcaster_id = users[0].id
        self._sink = TwitchSink(
            session=self._session,
            client_id=self.settings.client_id,
            broadcaster_id=self.broadcaster_id,
            sender_id=self.bot_id,
            tokens=self._tokens,
            channel=self.channel,
            is_moderator=self.settings.is_moderator,
            helix_base=twitchio.http.Route.BASE,
            drop_backoff_s=self.drop_backoff_s,
        )
        self._commands = ModeratorCommands(
            self.settings.command_prefix,
            self._sink,
            self._control,
            marks=self._marks,
            store=self._store,
            stream_id=self._stream_id,
            bot_login=self.bot_login,
        )
        await self._start_moderation()
        await self._subscribe()  # before the task group: its errors come out as they are
        self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        if self._safety is not None and self.moderation is not None:
            self._terms_task = self._tg.create_task(
                self.moderation.keep_terms_fresh(self._safety.set_platform_terms),
                name="twitch-blocked-terms",
            )
        self._forwarder = self._tg.create_task(self._forward(), name="twitch-chat-forwarder")
        self._supervisor = self._tg.create_task(self._supervise(), name="twitch-chat-supervisor")
        log.info("reading Twitch chat of #%s as %s", self.channel, self.bot_login)

    async def _start_moderation(self) -> None:
        """Twitch's blocked terms into the filter; AutoMod before sends if a moderator."""
        assert self._session is not None and self._tokens is not None and self._sink is not None
        self.moderation = TwitchModeration(
            session=self._session,
            client_id=self.settings.client_id,
            broadcaster_id=self.broadcaster_id,
            moderator_id=self.bot_id,
            tokens=self._tokens,
            helix_base=twitchio.http.Route.BASE,
            refresh_s=self.blocked_terms_refresh_s,
        )
        if self.settings.is_moderator:
            self._sink.automod = self.moderation.automod_permits
        if self._safety is not None:
            terms = await self.moderation.fetch_blocked_terms()
            if terms is not None:
                self._safety.set_platform_terms(terms)

    async def _login_tokens(self) -> Tokens:
        """Tokens from the token file (else the settings), validated, refreshed if expired."""
        assert self._session is not None
        s = self.settings
        tokens = await asyncio.to_thread(auth.load_tokens, self.token_file)
        source = f"the token file {self.token_file}"
        if tokens is None:
            source = "CHATLING_TWITCH__BOT_TOKEN"
            if not s.bot_token.get_secret_value():
                raise ConfigError(
                    f"no Twitch token: run `chatling auth twitch` (writes {self.token_file}) "
                    "or set CHATLING_TWITCH__BOT_TOKEN and CHATLING_TWITCH__REFRESH_TOKEN"
                )
            tokens = Tokens(access_token=s.bot_token, refresh_token=s.refresh_token)
        self._redactor.add(*tokens.secrets())
        id_base = twitchio.http.Route.ID_BASE
        try:
            with self._twitch_errors("validating the bot's token"):
                info = await auth.validate(
                    tokens.access_token, session=self._session, id_base=id_base
                )
                if info is None:
                    tokens = await self._refresh(tokens)
                    info = await auth.validate(
                        tokens.access_token, session=self._session, id_base=id_base
                    )
        except TwitchError as exc:
            raise TwitchError(f"{exc} (the token came from {source})") from None
        if info is None:
            raise TwitchError(
                "Twitch rejects the bot's refreshed token: run `chatling auth twitch` again"
            )
        missing = sorted(set(auth.BOT_SCOPES) - set(info.scopes))
        if missing:
            raise TwitchError(
                f"the bot's token lacks the scopes {', '.join(missing)}: "
                "run `chatling auth twitch` again"
            )
        if self.bot_login and self.bot_login != info.login:
            log.warning(
                "the token belongs to %s, not CHATLING_TWITCH__BOT_LOGIN=%s",
                info.login,
                self.bot_login,
            )
        self.bot_login = info.login
        tokens = Tokens(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            scopes=info.scopes,
            user_id=info.user_id,
            login=info.login,
            expires_at=time.time() + info.expires_in,
        )
        await asyncio.to_thread(auth.save_tokens, self.token_file, tokens)
        return tokens

    async def _refresh(self, tokens: Tokens) -> Tokens:
        assert self._session is not None
        if not tokens.refresh_token.get_secret_value():
            raise TwitchAuthError(
                "the bot's token expired and there is no refresh token: run `chatling auth twitch`"
            )
        secret = self.settings.client_secret
        with self._twitch_errors("refreshing the bot's token"):
            new = await auth.refresh(
                self.settings.client_id,
                tokens,
                session=self._session,
                client_secret=secret if secret.get_secret_value() else None,
                id_base=twitchio.http.Route.ID_BASE,
            )
        self._redactor.add(*new.secrets())
        return new

    async def _subscribe(self) -> None:
        """A fresh EventSub websocket with the ``channel.chat.message`` subscription."""
        client = self._client
        assert client is not None
        socket = _HandoverWebsocket(
            client=client,
            token_for=self.bot_id,
            http=client.http,
            keep_alive_timeout=self.keepalive_timeout_s,
        )
        with self._twitch_errors("subscribing to the chat of #" + self.channel):
            async with asyncio.timeout(self.request_timeout_s):
                await socket.connect(fail_once=True)
            client._websockets[self.bot_id][str(socket.session_id)] = socket
            try:
                async with asyncio.timeout(self.request_timeout_s):
                    await client.subscribe_websocket(
                        ChatMessageSubscription(
                            broadcaster_user_id=self.broadcaster_id, user_id=self.bot_id
                        ),
                        token_for=self.bot_id,
                        socket_id=socket.session_id,
                    )
            except BaseException:
                await socket.close()
                raise
        if self._store is not None:
            await self._subscribe_deletions(socket)

    async def _subscribe_deletions(self, socket: Websocket) -> None:
        """``channel.chat.message_delete`` on ``socket``; a refusal is warned about, once."""
        assert self._client is not None
        try:
            with self._twitch_errors("subscribing to deleted messages in #" + self.channel):
                async with asyncio.timeout(self.request_timeout_s):
                    await self._client.subscribe_websocket(
                        ChatMessageDeleteSubscription(
                            broadcaster_user_id=self.broadcaster_id, user_id=self.bot_id
                        ),
                        token_for=self.bot_id,
                        socket_id=socket.session_id,
                    )
        except TwitchError as exc:
            level = logging.DEBUG if self._delete_warned else logging.WARNING
            self._delete_warned = True
            log.log(
                level,
                "%s; messages moderators delete will not be stamped in the log "
                "(they may still become training targets)",
                exc,
            )

    async def _drain(self) -> None:
        """Hand what was read to the inbox before leaving (bounded by ``drain_timeout_s``)."""
        if self._forwarder is None or not self._attached.is_set():
            if self.backlog:
                log.warning("leaving Twitch chat with %d messages and no inbox", self.backlog)
            return
        self._buffer.put_nowait(_STOP)
        done, _ = await asyncio.wait({self._forwarder}, timeout=self.drain_timeout_s)
        if not done:
            log.warning(
                "leaving Twitch chat with %d messages not handed to the inbox (it stayed full)",
                self._buffer.qsize() - 1,
            )

    # -- background ---------------------------------------------------------------------

    async def _forward(self) -> None:
        """Buffer -> inbox, in order; the only place that waits on the bounded inbox."""
        await self._attached.wait()
        while True:
            item = await self._buffer.get()
            if item is _STOP:
                return
            if isinstance(item, _Deleted):
                self._stamp_deleted(item)
                continue
            assert self.inbox is not None
            await self.inbox.put(item)
            self.received += 1
            if self._buffer.empty():
                self._warn_at = BACKLOG_WARN

    def _stamp_deleted(self, message_id: str) -> None:
        if self._store is None or self._stream_id is None:
            return
        try:
            self._store.mark_deleted(self._stream_id, str(message_id))
        except StoreError as exc:
            log.error("could not log that message %s was deleted: %s", message_id, exc)

    async def _supervise(self) -> None:
        """Resubscribe on a fresh socket when twitchio gave its socket up for good."""
        while True:
            await self._socket_closed.wait()
            self._socket_closed.clear()
            await asyncio.sleep(0)
            if self._closing or self._has_live_socket():
                continue
            delay = 2.0
            while not self._closing:
                log.warning("Twitch chat websocket closed for good; subscribing again")
                try:
                    await self._subscribe()
                    break
                except TwitchAuthError as exc:
                    self._give_up(exc)
                    return
                except TwitchError as exc:
                    log.error(
                        "could not resubscribe to Twitch chat (%s); next try in %.0f s", exc, delay
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _give_up(self, exc: TwitchAuthError) -> None:
        """Twitch refuses the bot's token for good: stop reading and sending, say why once."""
        self.failed = exc
        if self._sink is not None:
            self._sink.gate.block(math.inf, "the bot's token was revoked")
        log.error(
            "Twitch chat stopped: %s. Nothing more is read or sent until you run "
            "`chatling auth twitch` and restart chatling",
            exc,
        )

    def _has_live_socket(self) -> bool:
        assert self._client is not None
        sockets = self._client._websockets.get(self.bot_id, {})
        return any(not s._closed for s in sockets.values())

    # -- twitchio listeners (each runs in its own task, created by twitchio) ---------------

    async def _on_message(self, payload: twitchio.ChatMessage) -> None:
        message = to_chat_message(
            payload,
            offset=max(0.0, time.time() - self.stream_start),
            bot_login=self.bot_login,
            known_bots=self.known_bots,
        )
        if message.message_id:
            if message.message_id in self._seen:
                log.debug("dropping a duplicate delivery of message %s", message.message_id)
                return
            self._seen[message.message_id] = None
            if len(self._seen) > 4096:
                self._seen.popitem(last=False)
        self._buffer.put_nowait(message)
        if self._buffer.qsize() >= self._warn_at:
            log.warning("Twitch chat backlog: %d messages wait for the inbox", self._buffer.qsize())
            self._warn_at *= 2
        commands, tg = self._commands, self._tg
        if commands is not None and not self._closing:
            commands.record_mark(message)
        if (
            commands is not None
            and tg is not None
            and not self._closing
            and commands.wants(message)
        ):
            tg.create_task(commands.handle(message))

    async def _on_message_delete(self, payload: twitchio.ChatMessageDelete) -> None:
        if str(payload.broadcaster.id) != self.broadcaster_id or not payload.message_id:
            return
        log.debug("a moderator deleted message %s of %s", payload.message_id, payload.user.name)
        self._buffer.put_nowait(_Deleted(payload.message_id))

    async def _on_token_refreshed(self, payload: Any) -> None:
        if self._tokens is None or str(payload.user_id) != self.bot_id:
            return
        old = self._tokens.tokens
        await self._tokens.adopt(
            Tokens(
                access_token=SecretStr(payload.token),
                refresh_token=SecretStr(payload.refresh_token),
                scopes=old.scopes,
                user_id=old.user_id,
                login=old.login,
                expires_at=time.time() + float(payload.expires_in or 0),
            )
        )

    async def _on_socket_closed(self, payload: Any) -> None:
        if not self._closing:
            log.info("Twitch chat websocket %s closed", payload.socket)
        self._socket_closed.set()

    # -- errors ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _twitch_errors(self, doing: str) -> Iterator[None]:
        """twitchio / network errors as one ``TwitchError`` whose text holds no secret."""
        try:
            yield
        except twitchio.HTTPException as exc:
            error = TwitchAuthError if _token_refused(exc) else TwitchError
            raise error(self._explain(doing, exc)) from None
        except TimeoutError:
            raise TwitchError(
                f"{doing} failed: Twitch did not answer within {self.request_timeout_s:.0f} s; "
                "check the network, or try again later"
            ) from None
        except (twitchio.TwitchioException, aiohttp.ClientError, OSError) as exc:
            text = redact(str(exc), self._redactor.secrets)
            raise TwitchError(f"{doing} failed ({type(exc).__name__}: {text})") from None

    def _explain(self, doing: str, exc: twitchio.HTTPException) -> str:
        extra = exc.extra if isinstance(exc.extra, dict) else {}
        said = redact(str(extra.get("message") or ""), self._redactor.secrets)
        if _token_refused(exc):
            return f"{doing}: Twitch rejected the bot's token ({said}); run `chatling auth twitch`"
        if exc.status == 403:
            return f"{doing}: Twitch refused ({said}). " + auth.grant_instructions(
                self.bot_login, self.channel
            )
        return f"{doing} failed: Twitch answered HTTP {exc.status} ({said})"


def _token_refused(exc: twitchio.HTTPException) -> bool:
    """Twitch rejected the token (401), or refused to refresh it (4xx from oauth2/token)."""
    path = str(getattr(exc.route, "path", "") or "")
    return exc.status == 401 or (path.endswith("oauth2/token") and 400 <= exc.status < 500)
