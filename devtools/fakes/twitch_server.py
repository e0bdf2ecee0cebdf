"""A fake Twitch on 127.0.0.1 (random port), in its own thread and event loop.

Serves what chatling's Twitch client touches: id.twitch.tv (``/oauth2/validate``,
``/oauth2/token`` for refresh and device-code grants, ``/oauth2/device``),
Helix (``/helix/users``, ``/helix/eventsub/subscriptions``,
``/helix/chat/messages``, ``/helix/moderation/blocked_terms``,
``/helix/moderation/enforcements/status``) and the EventSub websocket (``/ws``: welcome,
keepalives, notifications of ``channel.chat.message`` and
``channel.chat.message_delete``, ``session_reconnect``). It records every
connection, subscription and posted chat message, and can be scripted:
answers to sends, a flood of notifications, a closed or aborted socket, a
reconnect request, refused subscription types. It runs in a thread so its
timing (keepalives, floods) does not depend on the client's event loop, like
the real server.

Usage::

    with FakeTwitch() as fake:
        fake.patch_twitchio(monkeypatch)       # twitchio's three base URLs -> the fake
        await fake.send_chat("hello", chatter="viewer1")

No access log is written (it would print query strings).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import secrets
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devtools.fakes.threaded import ThreadedServer


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeUser:
    id: str
    login: str
    display_name: str = ""


@dataclass
class Conn:
    """One EventSub websocket connection as the fake sees it."""

    session_id: str
    ws: web.WebSocketResponse
    keepalive_s: int
    transport: Any = None
    reconnected_from: str | None = None
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    silent: bool = False
    """No keepalives (a connection that died without closing)."""
    received: list[str] = field(default_factory=list)
    """Text frames the client sent (Twitch forbids any)."""


@dataclass
class ChatPost:
    """One ``POST /helix/chat/messages`` as received."""

    body: dict[str, Any]
    token: str


class FakeTwitch(ThreadedServer):
    """See the module docstring."""

    thread_name = "fake-twitch"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        bot: FakeUser | None = None,
        broadcaster: FakeUser | None = None,
        keepalive_every_s: float = 1.0,
        device_pending_polls: int = 2,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.bot = bot or FakeUser("1001", "chatling_bot", "Chatling_Bot")
        self.broadcaster = broadcaster or FakeUser("2002", "streamer", "Streamer")
        self.users = {u.id: u for u in (self.bot, self.broadcaster)}
        self.keepalive_every_s = keepalive_every_s
        self.device_pending_polls = device_pending_polls
        self.scopes = ["user:bot", "user:read:chat", "user:write:chat"]
        # state: touched from the fake's loop; tests read snapshots
        self.access: dict[str, str] = {}
        """Valid access token -> user id."""
        self.refresh: dict[str, str] = {}
        """Valid refresh token -> user id."""
        self.conns: list[Conn] = []
        self.subscriptions: list[dict[str, Any]] = []
        self.chat_posts: list[ChatPost] = []
        self.send_script: deque[tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.refuse_types: set[str] = set()
        """Subscription types refused with 403 (as Twitch does when a scope is missing)."""
        self.refused: list[str] = []
        """The subscription types refused so far."""
        """Answers to the next sends: (status, json body, headers); empty -> success."""
        self.token_requests: list[dict[str, str]] = []
        self.token_queries: list[dict[str, str]] = []
        """The URL query of each ``/oauth2/token`` request (secrets belong in the body)."""
        self.device_polls = 0
        self.blocked_terms: list[str] = []
        """The channel's Twitch blocked terms (Helix Get Blocked Terms), 2 a page."""
        self.automod_holds: set[str] = set()
        """Words AutoMod holds (Check AutoMod Status answers is_permitted: false)."""
        self.moderator_scopes: set[str] = {"moderator:read:blocked_terms", "moderation:read"}
        """Scopes the bot's token has for the moderation endpoints (else 401 missing scope)."""
        self.moderation_requests: list[tuple[str, dict[str, str], Any]] = []
        """(path, query, json body) of every moderation request."""
        self._ids = itertools.count(1)

    # -- lifetime -----------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/oauth2/validate", self._validate)
        router.add_post("/oauth2/token", self._token)
        router.add_post("/oauth2/device", self._device)
        router.add_get("/helix/users", self._users)
        router.add_post("/helix/eventsub/subscriptions", self._subscribe)
        router.add_post("/helix/chat/messages", self._chat_message)
        router.add_get("/ws", self._websocket)
        router.add_get("/helix/moderation/blocked_terms", self._blocked_terms_get)
        router.add_post("/helix/moderation/enforcements/status", self._automod_status)

    async def close_connections(self) -> None:
        for conn in self.conns:
            if not conn.closed:
                await conn.ws.close()

    # -- URLs and wiring ------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def helix_base(self) -> str:
        return f"{self.base}helix/"

    @property
    def wss(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def patch_twitchio(self, monkeypatch: Any) -> None:
        """Point twitchio's Helix, id.twitch.tv and EventSub URLs at this fake."""
        import twitchio.eventsub.websockets
        import twitchio.http

        monkeypatch.setattr(twitchio.http.Route, "BASE", self.helix_base)
        monkeypatch.setattr(twitchio.http.Route, "ID_BASE", self.base)
        monkeypatch.setattr(twitchio.eventsub.websockets, "WSS", self.wss)

    def issue_tokens(
        self, user_id: str | None = None, access: str | None = None
    ) -> tuple[str, str]:
        """A valid (access, refresh) pair for ``user_id`` (default: the bot)."""
        access = access or secrets.token_hex(15)
        refresh = secrets.token_hex(25)
        uid = user_id or self.bot.id
        self.access[access] = uid
        self.refresh[refresh] = uid
        return access, refresh

    def env_settings(self, access: str, refresh: str, token_file: str) -> dict[str, str]:
        """The ``.env`` lines that point ``chatling run``'s Twitch client at this fake."""
        return {
            "CHATLING_TWITCH__CHANNEL": self.broadcaster.login,
            "CHATLING_TWITCH__BOT_LOGIN": self.bot.login,
            "CHATLING_TWITCH__CLIENT_ID": self.client_id,
            "CHATLING_TWITCH__BOT_TOKEN": access,
            "CHATLING_TWITCH__REFRESH_TOKEN": refresh,
            "CHATLING_TWITCH__TOKEN_FILE": token_file,
            "CHATLING_TWITCH__HELIX_URL": self.helix_base,
            "CHATLING_TWITCH__ID_URL": self.base,
            "CHATLING_TWITCH__EVENTSUB_URL": self.wss,
        }

    # -- scripted server behaviour (await these from tests) --------------------------------

    def live_conns(self) -> list[Conn]:
        return [c for c in self.conns if not c.closed]

    def _chat_target(self, kind: str = "channel.chat.message") -> Conn | None:
        subscribed = [
            c for c in self.live_conns() if any(s["type"] == kind for s in c.subscriptions)
        ]
        return subscribed[-1] if subscribed else None

    def _user_id(self, login: str) -> str:
        known = next((u.id for u in self.users.values() if u.login == login), None)
        return known or str(5000 + abs(hash(login)) % 1000)

    async def send_chat(self, text: str, **fields: Any) -> str:
        """A ``channel.chat.message`` notification to the subscribed socket; its message id."""

        async def go() -> str:
            conn = self._chat_target()
            if conn is None:
                raise RuntimeError("no websocket holds a channel.chat.message subscription")
            event = self.chat_event(text, **fields)
            await self._send(conn, self._notification(conn, event))
            return str(event["message_id"])

        return await self.run(go)

    async def delete_message(self, message_id: str, *, chatter: str = "viewer1") -> None:
        """A ``channel.chat.message_delete`` notification: a moderator deleted ``message_id``."""

        async def go() -> None:
            conn = self._chat_target("channel.chat.message_delete")
            if conn is None:
                raise RuntimeError("no websocket holds a channel.chat.message_delete subscription")
            b = self.broadcaster
            event = {
                "broadcaster_user_id": b.id,
                "broadcaster_user_login": b.login,
                "broadcaster_user_name": b.display_name,
                "target_user_id": self._user_id(chatter),
                "target_user_login": chatter,
                "target_user_name": chatter.capitalize(),
                "message_id": message_id,
            }
            await self._send(conn, self._notification(conn, event, "channel.chat.message_delete"))

        await self.run(go)

    async def flood(self, count: int, seconds: float, prefix: str = "flood") -> None:
        """``count`` notifications spread evenly over ``seconds`` (keepalives keep going)."""

        async def go() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(count):
                conn = self._chat_target()
                assert conn is not None, "flood: no subscribed socket"
                event = self.chat_event(f"{prefix} {i}", chatter=f"viewer{i % 50}")
                await self._send(conn, self._notification(conn, event))
                delay = start + (i + 1) * seconds / count - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

        await self.run(go)

    async def close_sockets(self, code: int = 4000) -> None:
        """Close every live socket with a close frame (4000: Twitch's internal error)."""

        async def go() -> None:
            for conn in self.live_conns():
                await conn.ws.close(code=code, message=b"fake server closing")

        await self.run(go)

    async def silence_sockets(self) -> None:
        """Stop keepalives on every live socket, leaving it open: a dead connection."""

        async def go() -> None:
            for conn in self.live_conns():
                conn.silent = True

        await self.run(go)

    async def abort_sockets(self) -> None:
        """Drop every live socket's TCP connection without a close frame."""

        async def go() -> None:
            for conn in self.live_conns():
                if conn.transport is not None:
                    conn.transport.abort()

        await self.run(go)

    async def request_reconnect(self, then_on_old: Iterable[str] = ()) -> None:
        """``session_reconnect`` to the subscribed socket, then notifications still sent there."""

        async def go() -> None:
            conn = self._chat_target()
            assert conn is not None, "reconnect: no subscribed socket"
            url = f"{self.wss}?reconnect={conn.session_id}"
            session = {
                "id": conn.session_id,
                "status": "reconnecting",
                "keepalive_timeout_seconds": None,
                "reconnect_url": url,
                "connected_at": _now(),
            }
            await self._send(conn, self._message("session_reconnect", {"session": session}))
            for text in then_on_old:
                await self._send(conn, self._notification(conn, self.chat_event(text)))

        await self.run(go)

    # -- message builders -----------------------------------------------------------------

    def chat_event(
        self,
        text: str,
        *,
        chatter: str = "viewer1",
        chatter_id: str | None = None,
        display_name: str | None = None,
        badges: Iterable[str] = (),
        emotes: Iterable[str] = (),
        reply_to: str | None = None,
        parent_login: str | None = None,
        parent_body: str = "earlier message",
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """The ``event`` of a ``channel.chat.message`` notification; ``reply_to`` makes it a
        reply to that message id, by ``parent_login`` (default: the broadcaster)."""
        emote_set = set(emotes)
        fragments: list[dict[str, Any]] = []
        for i, word in enumerate(text.split(" ")):
            piece = word if i == 0 else " " + word
            if word in emote_set:
                if i:
                    fragments.append(_fragment("text", " "))
                fragments.append(
                    _fragment(
                        "emote",
                        word,
                        emote={
                            "id": "25",
                            "emote_set_id": "0",
                            "owner_id": "0",
                            "format": ["static"],
                        },
                    )
                )
            elif fragments and fragments[-1]["type"] == "text":
                fragments[-1]["text"] += piece
            else:
                fragments.append(_fragment("text", piece))
        reply = None
        if reply_to:
            parent = parent_login or self.broadcaster.login
            parent_name = next(
                (u.display_name for u in self.users.values() if u.login == parent),
                parent.capitalize(),
            )
            reply = {
                "parent_message_id": reply_to,
                "parent_message_body": parent_body,
                "parent_user_id": self._user_id(parent),
                "parent_user_name": parent_name,
                "parent_user_login": parent,
                "thread_message_id": reply_to,
                "thread_user_id": self.broadcaster.id,
                "thread_user_name": self.broadcaster.display_name,
                "thread_user_login": self.broadcaster.login,
            }
        b = self.broadcaster
        return {
            "broadcaster_user_id": b.id,
            "broadcaster_user_login": b.login,
            "broadcaster_user_name": b.display_name,
            "chatter_user_id": chatter_id or str(5000 + abs(hash(chatter)) % 1000),
            "chatter_user_login": chatter,
            "chatter_user_name": display_name or chatter.capitalize(),
            "message_id": message_id or str(uuid.uuid4()),
            "message": {"text": text, "fragments": fragments},
            "color": "#00FF7F",
            "badges": [{"set_id": s, "id": "1", "info": ""} for s in badges],
            "message_type": "text",
            "cheer": None,
            "reply": reply,
            "channel_points_custom_reward_id": None,
            "channel_points_animation_id": None,
            "source_broadcaster_user_id": None,
            "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None,
            "source_message_id": None,
            "source_badges": None,
            "is_source_only": None,
        }

    def _message(self, kind: str, payload: dict[str, Any], **meta: Any) -> dict[str, Any]:
        metadata = {
            "message_id": str(uuid.uuid4()),
            "message_type": kind,
            "message_timestamp": _now(),
        }
        return {"metadata": {**metadata, **meta}, "payload": payload}

    def _notification(
        self, conn: Conn, event: dict[str, Any], kind: str = "channel.chat.message"
    ) -> dict[str, Any]:
        sub = next(s for s in conn.subscriptions if s["type"] == kind)
        return self._message(
            "notification",
            {"subscription": sub, "event": event},
            subscription_type=kind,
            subscription_version="1",
        )

    async def _send(self, conn: Conn, message: dict[str, Any]) -> None:
        if not conn.closed:
            await conn.ws.send_str(json.dumps(message))

    # -- HTTP handlers -------------------------------------------------------------------

    def _bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").removeprefix("OAuth ")
        return self.access.get(token) and token

    async def _validate(self, request: web.Request) -> web.Response:
        token = self._bearer(request)
        if token is None:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        user = self.users[self.access[token]]
        return web.json_response(
            {
                "client_id": self.client_id,
                "login": user.login,
                "scopes": self.scopes,
                "user_id": user.id,
                "expires_in": 14400,
            }
        )

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _token(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        self.token_requests.append(params)
        self.token_queries.append(dict(request.query))
        grant = params.get("grant_type")
        if grant == "refresh_token":
            uid = self.refresh.pop(params.get("refresh_token", ""), None)
            if uid is None:
                return web.json_response(
                    {"status": 400, "message": "Invalid refresh token"}, status=400
                )
            access, refresh = self.issue_tokens(uid)
            return web.json_response(self._token_body(access, refresh))
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            self.device_polls += 1
            if params.get("device_code") != "fake-device-code":
                return web.json_response(
                    {"status": 400, "message": "invalid device code"}, status=400
                )
            if self.device_polls <= self.device_pending_polls:
                return web.json_response(
                    {"status": 400, "message": "authorization_pending"}, status=400
                )
            access, refresh = self.issue_tokens()
            return web.json_response(self._token_body(access, refresh))
        return web.json_response({"status": 400, "message": "unsupported grant type"}, status=400)

    def _token_body(self, access: str, refresh: str) -> dict[str, Any]:
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 14400,
            "scope": self.scopes,
            "token_type": "bearer",
        }

    async def _device(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if params.get("client_id") != self.client_id:
            return web.json_response({"status": 400, "message": "invalid client"}, status=400)
        return web.json_response(
            {
                "device_code": "fake-device-code",
                "expires_in": 1800,
                "interval": 1,
                "user_code": "FAKECODE",
                "verification_uri": "https://www.twitch.tv/activate?device-code=FAKECODE",
            }
        )

    async def _users(self, request: web.Request) -> web.Response:
        if self._bearer(request) is None:
            return web.json_response({"status": 401, "message": "Invalid OAuth token"}, status=401)
        ids, logins = request.query.getall("id", []), request.query.getall("login", [])
        found = [u for u in self.users.values() if u.id in ids or u.login in logins]
        return web.json_response({"data": [_user_json(u) for u in found]})

    def _moderation_refusal(self, request: web.Request, scope: str) -> web.Response | None:
        if self._bearer(request) is None:
            return web.json_response({"status": 401, "message": "Invalid OAuth token"}, status=401)
        if scope not in self.moderator_scopes:
            return web.json_response(
                {"error": "Unauthorized", "status": 401, "message": f"Missing scope: {scope}"},
                status=401,
            )
        return None

    async def _blocked_terms_get(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.moderation_requests.append((request.path, query, None))
        refusal = self._moderation_refusal(request, "moderator:read:blocked_terms")
        if refusal is not None:
            return refusal
        if query.get("moderator_id") != self.bot.id:
            return web.json_response({"status": 403, "message": "not a moderator"}, status=403)
        start = int(query.get("after") or 0)
        page = self.blocked_terms[start : start + 2]
        data = [{"id": str(start + i), "text": t, "broadcaster_id": self.broadcaster.id}
                for i, t in enumerate(page)]  # fmt: skip
        more = start + 2 < len(self.blocked_terms)
        return web.json_response(
            {"data": data, "pagination": {"cursor": str(start + 2)} if more else {}}
        )

    async def _automod_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.moderation_requests.append((request.path, dict(request.query), body))
        refusal = self._moderation_refusal(request, "moderation:read")
        if refusal is not None:
            return refusal
        data = [
            {"msg_id": m["msg_id"],
             "is_permitted": not any(w in m["msg_text"].lower() for w in self.automod_holds)}
            for m in body["data"]
        ]  # fmt: skip
        return web.json_response({"data": data})

    async def _subscribe(self, request: web.Request) -> web.Response:
        if self._bearer(request) is None:
            return web.json_response({"status": 401, "message": "Invalid OAuth token"}, status=401)
        body = await request.json()
        if body.get("type") in self.refuse_types:
            self.refused.append(body["type"])
            return web.json_response(
                {
                    "error": "Forbidden",
                    "status": 403,
                    "message": "subscription missing proper authorization",
                },
                status=403,
            )
        session_id = body.get("transport", {}).get("session_id")
        conn = next((c for c in self.live_conns() if c.session_id == session_id), None)
        if conn is None:
            return web.json_response(
                {"status": 400, "message": "websocket transport session does not exist"}, status=400
            )
        sub = {
            "id": str(uuid.uuid4()),
            "status": "enabled",
            "type": body["type"],
            "version": body["version"],
            "condition": body["condition"],
            "transport": {"method": "websocket", "session_id": session_id},
            "created_at": _now(),
            "cost": 0,
        }
        conn.subscriptions.append(sub)
        self.subscriptions.append(sub)
        return web.json_response(
            {
                "data": [sub],
                "total": len(self.subscriptions),
                "total_cost": 0,
                "max_total_cost": 10,
            },
            status=202,
        )

    async def _chat_message(self, request: web.Request) -> web.Response:
        token = self._bearer(request)
        if token is None:
            return web.json_response({"status": 401, "message": "Invalid OAuth token"}, status=401)
        body = await request.json()
        self.chat_posts.append(ChatPost(body=body, token=token))
        if self.send_script:
            status, answer, headers = self.send_script.popleft()
            return web.json_response(answer, status=status, headers=headers)
        sent = {"message_id": str(uuid.uuid4()), "is_sent": True, "drop_reason": None}
        return web.json_response({"data": [sent]})

    # -- EventSub websocket -------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        keepalive = int(request.query.get("keepalive_timeout_seconds", "10"))
        conn = Conn(
            session_id=f"fake-session-{next(self._ids)}",
            ws=ws,
            keepalive_s=keepalive,
            transport=request.transport,
        )
        old_id = request.query.get("reconnect")
        if old_id:
            old = next(c for c in self.conns if c.session_id == old_id)
            conn.reconnected_from = old_id
            conn.subscriptions = [
                {**s, "transport": {"method": "websocket", "session_id": conn.session_id}}
                for s in old.subscriptions
            ]
        self.conns.append(conn)
        session = {
            "id": conn.session_id,
            "status": "connected",
            "connected_at": _now(),
            "keepalive_timeout_seconds": keepalive,
            "reconnect_url": None,
            "recovery_url": None,
        }
        await self._send(conn, self._message("session_welcome", {"session": session}))
        beat = asyncio.create_task(self._keepalives(conn))
        try:
            async for msg in ws:  # also answers the client's pings
                if msg.type == web.WSMsgType.TEXT:
                    conn.received.append(msg.data)
        finally:
            conn.closed = True
            beat.cancel()
        return ws

    async def _keepalives(self, conn: Conn) -> None:
        while not conn.closed:
            await asyncio.sleep(self.keepalive_every_s)
            if conn.silent:
                continue
            try:
                await self._send(conn, self._message("session_keepalive", {}))
            except ConnectionError:
                return


def _fragment(kind: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "text": text, "cheermote": None, "emote": None, "mention": None, **extra}


def _user_json(u: FakeUser) -> dict[str, Any]:
    return {
        "id": u.id,
        "login": u.login,
        "display_name": u.display_name or u.login,
        "type": "",
        "broadcaster_type": "",
        "description": "",
        "profile_image_url": "https://example.invalid/p.png",
        "offline_image_url": "",
        "view_count": 0,
        "created_at": "2020-01-01T00:00:00Z",
    }
