"""A fake Discord (REST API v10 + gateway) on 127.0.0.1 (random port), in its own thread.

Serves what chatling's discord.py client touches: ``GET /users/@me`` (login),
``GET /oauth2/applications/@me``, the bulk command sync (``PUT
/applications/{app}/commands`` and ``.../guilds/{guild}/commands``), the
interaction callback (``POST /interactions/{id}/{token}/callback``, with
``with_response``), follow-ups (``POST /webhooks/{app}/{token}``) and the
original response (``GET/PATCH/DELETE /webhooks/{app}/{token}/messages/@original``);
and the gateway websocket (``/ws``): HELLO, IDENTIFY (token checked), READY,
heartbeat ACKs, then any dispatch a test asks for: an ``INTERACTION_CREATE``
for ``/chat``, a ``GUILD_CREATE`` (the server, its roles and owner) or a
``MESSAGE_REACTION_ADD`` by a member. Every REST request is recorded in order. Like Discord, it
refuses a second acknowledgement of one interaction (40060) and a follow-up
before the acknowledgement (10015), and answers with ``Content-Type:
application/json`` exactly (discord.py only decodes that). Payload shapes
follow discord.py 2.7.1's parsers (``Interaction._from_data``, ``AppInfo``,
``Message``, ``AppCommand``).

It runs in a thread with its own event loop, so its gateway keeps time whatever
the client's loop is doing, like the real server. No access log is written
(URLs carry interaction tokens).

Usage::

    with FakeDiscord() as fake:
        fake.patch_discord(monkeypatch)     # discord.py's REST base and gateway -> the fake
        ...start the bot with fake.token...
        sent = await fake.send_chat_command("hello", user_id=42, username="ann")
        followup = await fake.wait_for(lambda r: r.kind == "followup" and r.token == sent.token)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from devtools.fakes.threaded import ThreadedServer

API = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 64
"""Message flag: only the user who ran the command sees it."""
MANAGE_MESSAGES = 1 << 13
"""Permission bit: may delete and pin others' messages (what a moderator role has)."""
GUILD_MESSAGE_REACTIONS = 1 << 10
"""Gateway intent: without it Discord sends no ``MESSAGE_REACTION_ADD`` in servers."""


def _member(user: dict[str, Any], roles: Iterable[int]) -> dict[str, Any]:
    """A guild member object as the gateway sends it."""
    return {
        "user": user,
        "roles": [str(r) for r in roles],
        "joined_at": _now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "nick": None,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON answer with ``Content-Type: application/json`` exactly, as Discord sends."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status)


@dataclass(frozen=True)
class Request:
    """One REST request as the fake received it."""

    method: str
    path: str
    """Path below ``/api/v10``, e.g. ``/interactions/1/tok/callback``."""
    kind: str
    """``login``, ``app_info``, ``sync``, ``callback``, ``followup``, ``original``, ``unknown``."""
    query: dict[str, str]
    body: Any
    token: str | None = None
    """The interaction token the request used, for callbacks, follow-ups and originals."""
    status: int = 200

    @property
    def flags(self) -> int:
        """Message flags of the payload (a callback's ``data.flags`` or a follow-up's)."""
        if not isinstance(self.body, dict):
            return 0
        data = self.body.get("data") if self.kind == "callback" else self.body
        return int((data or {}).get("flags") or 0)


@dataclass
class SentInteraction:
    """An interaction the fake dispatched, and what the client did with it."""

    id: int
    token: str
    user_id: int
    guild_id: int | None
    channel_id: int
    acked_type: int | None = None
    """The callback type received (4: message, 5: deferred), None before."""
    original_id: int | None = None
    original_deleted: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)


class FakeDiscord(ThreadedServer):
    """See the module docstring."""

    thread_name = "fake-discord"

    def __init__(self, *, token: str | None = None, heartbeat_interval_ms: int = 41_250) -> None:
        super().__init__()
        self.token = token or f"fake.{secrets.token_urlsafe(24)}"
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ids = itertools.count(1)
        self.app_id = self.snowflake()
        self.bot_user: dict[str, Any] = {
            "id": str(self.app_id),
            "username": "chatling",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "flags": 0,
            "mfa_enabled": False,
        }
        # state, touched on the fake's loop; tests read it after awaiting events
        self.requests: list[Request] = []
        self.identifies = 0
        """IDENTIFY payloads received with the right token."""
        self.intents = 0
        """The gateway intents of the last IDENTIFY."""
        self.bad_identifies = 0
        self.heartbeats = 0
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        """Registered commands by guild id (None: global), as last synced."""
        self.interactions: dict[str, SentInteraction] = {}
        """By interaction token."""
        self._sockets: list[web.WebSocketResponse] = []
        self._identified: web.WebSocketResponse | None = None
        self._seq = 0
        self._waiters: list[tuple[Callable[[Request], bool], asyncio.Future[Request]]] = []
        self._identify_waiters: list[asyncio.Future[None]] = []
        self._lock = threading.Lock()

    def snowflake(self) -> int:
        """A fresh, increasing Discord id."""
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(self._ids)

    # -- lifetime ---------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_get(f"{API}/users/@me", self._login)
        r.add_get(f"{API}/oauth2/applications/@me", self._app_info)
        r.add_get(f"{API}/gateway", self._gateway_url)
        r.add_get(f"{API}/gateway/bot", self._gateway_url)
        r.add_put(f"{API}/applications/{{app}}/commands", self._sync)
        r.add_put(f"{API}/applications/{{app}}/guilds/{{guild}}/commands", self._sync)
        r.add_post(f"{API}/interactions/{{iid}}/{{token}}/callback", self._callback)
        r.add_post(f"{API}/webhooks/{{app}}/{{token}}", self._followup)
        r.add_route("*", f"{API}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._original)
        r.add_route("*", f"{API}/{{tail:.*}}", self._unknown)
        r.add_get("/ws", self._websocket)

    async def close_connections(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    # -- URLs and wiring --------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def patch_discord(self, monkeypatch: Any) -> None:
        """Point discord.py's REST base and default gateway at this fake."""
        import discord.gateway
        import discord.http
        import yarl

        monkeypatch.setattr(discord.http.Route, "BASE", self.api_base)
        monkeypatch.setattr(
            discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url)
        )

    # -- waiting (from the test's loop) -------------------------------------------------

    async def wait_for(self, predicate: Callable[[Request], bool], guard_s: float = 300) -> Request:
        """The first recorded request matching ``predicate``, past or future.

        ``guard_s`` only stops a hung test; nothing here measures speed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Request] = loop.create_future()
        with self._lock:
            match = next((r for r in self.requests if predicate(r)), None)
            if match is None:
                self._waiters.append((predicate, future))
        if match is not None:
            return match
        try:
            async with asyncio.timeout(guard_s):
                return await future
        finally:
            with self._lock:
                self._waiters = [(p, f) for p, f in self._waiters if f is not future]

    async def wait_identified(self, guard_s: float = 60) -> None:
        """Return once a client has identified with the right token."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.identifies:
                return
            self._identify_waiters.append(future)
        async with asyncio.timeout(guard_s):
            await future

    def requests_of(self, token: str) -> list[Request]:
        """The callback, follow-up and original-message requests of one interaction, in order."""
        with self._lock:
            return [r for r in self.requests if r.token == token]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            hits = [(p, f) for p, f in self._waiters if p(request)]
            self._waiters = [(p, f) for p, f in self._waiters if (p, f) not in hits]
        for _, future in hits:
            future.get_loop().call_soon_threadsafe(_resolve, future, request)

    # -- gateway dispatches (await these from tests) ------------------------------------

    async def send_chat_command(
        self,
        prompt: str,
        *,
        user_id: int = 4242,
        username: str = "viewer",
        global_name: str | None = None,
        guild_id: int | None = None,
        command: str = "chat",
    ) -> SentInteraction:
        """Dispatch ``INTERACTION_CREATE`` for ``/chat prompt:<prompt>`` (a DM when
        ``guild_id`` is None) to the identified client; returns its id and token."""

        async def go() -> SentInteraction:
            sent = SentInteraction(
                id=self.snowflake(),
                token=f"itok-{secrets.token_urlsafe(16)}",
                user_id=user_id,
                guild_id=guild_id,
                channel_id=self.snowflake(),
            )
            self.interactions[sent.token] = sent
            user = {
                "id": str(user_id),
                "username": username,
                "discriminator": "0",
                "global_name": global_name,
                "avatar": None,
            }
            registered = self.commands.get(guild_id) or self.commands.get(None) or []
            command_id = next((c["id"] for c in registered if c["name"] == command), "0")
            data: dict[str, Any] = {
                "id": command_id,
                "name": command,
                "type": 1,
                "options": [{"name": "prompt", "type": 3, "value": prompt}],
            }
            payload: dict[str, Any] = {
                "id": str(sent.id),
                "application_id": str(self.app_id),
                "type": 2,
                "token": sent.token,
                "version": 1,
                "data": data,
                "channel_id": str(sent.channel_id),
                "locale": "en-US",
                "app_permissions": "2248473465835073",
                "entitlements": [],
                "attachment_size_limit": 10_485_760,
            }
            if guild_id is not None:
                data["guild_id"] = str(guild_id)
                payload["guild_id"] = str(guild_id)
                payload["guild_locale"] = "en-US"
                payload["context"] = 0
                payload["authorizing_integration_owners"] = {"0": str(guild_id)}
                payload["channel"] = {
                    "id": str(sent.channel_id),
                    "type": 0,
                    "guild_id": str(guild_id),
                    "name": "general",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                    "rate_limit_per_user": 0,
                    "topic": None,
                    "last_message_id": None,
                    "flags": 0,
                }
                payload["member"] = {**_member(user, ()), "permissions": "2248473465835073"}
            else:
                payload["context"] = 1
                payload["authorizing_integration_owners"] = {"1": str(user_id)}
                payload["channel"] = {"id": str(sent.channel_id), "type": 1, "recipients": [user]}
                payload["user"] = user
            await self._dispatch("INTERACTION_CREATE", payload)
            return sent

        return await self.run(go)

    async def create_guild(
        self, guild_id: int, *, owner_id: int, roles: dict[int, int] | None = None
    ) -> None:
        """Dispatch ``GUILD_CREATE``: the bot joined ``guild_id``, owned by ``owner_id``,
        with ``roles`` (role id -> permission bits) besides @everyone (no permissions)."""
        everyone = {guild_id: 0}
        role_list = [
            {"id": str(rid), "name": "@everyone" if rid == guild_id else f"role-{rid}",
             "permissions": str(perms), "position": 0 if rid == guild_id else 1,
             "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
            for rid, perms in {**everyone, **(roles or {})}.items()
        ]  # fmt: skip
        data = {
            "id": str(guild_id),
            "name": "fake server",
            "owner_id": str(owner_id),
            "roles": role_list,
            "channels": [],
            "members": [],
            "member_count": 3,
            "features": [],
            "emojis": [],
            "stickers": [],
            "unavailable": False,
        }
        await self.run(lambda: self._dispatch("GUILD_CREATE", data))

    async def add_reaction(
        self,
        sent: SentInteraction,
        message_id: int,
        emoji: str,
        *,
        user_id: int,
        username: str,
        roles: tuple[int, ...] = (),
    ) -> None:
        """Dispatch ``MESSAGE_REACTION_ADD``: a member of ``sent``'s server reacted with the
        unicode ``emoji`` on ``message_id`` in ``sent``'s channel. Like Discord, nothing is
        sent to a client that did not ask for the guild reactions intent."""
        if sent.guild_id is not None and not self.intents & GUILD_MESSAGE_REACTIONS:
            return
        user = {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
        }
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(sent.channel_id),
            "message_id": str(message_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
            "message_author_id": str(self.app_id),
        }
        if sent.guild_id is not None:
            data["guild_id"] = str(sent.guild_id)
            data["member"] = _member(user, roles)
        await self.run(lambda: self._dispatch("MESSAGE_REACTION_ADD", data))

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        ws = self._identified
        if ws is None or ws.closed:
            raise RuntimeError("no identified gateway client to dispatch to")
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        )
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                if op == 1:  # heartbeat
                    self.heartbeats += 1
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:  # identify
                    await self._identify(ws, payload.get("d") or {})
                elif op == 6:  # resume: not supported, ask for a fresh session
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
        finally:
            self._sockets.remove(ws)
            if self._identified is ws:
                self._identified = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            self.bad_identifies += 1
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identifies += 1
        self.intents = int(data.get("intents") or 0)
        self._identified = ws
        self._seq += 1
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [],
            "session_id": secrets.token_hex(16),
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
        }
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        with self._lock:
            waiters, self._identify_waiters = self._identify_waiters, []
        for future in waiters:
            future.get_loop().call_soon_threadsafe(_resolve, future, None)

    # -- REST -----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    async def _body(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            raw = form.get("payload_json")
            return json.loads(str(raw)) if raw is not None else None
        return json.loads(await request.text())

    async def _note(
        self, request: web.Request, kind: str, status: int = 200, token: str | None = None
    ) -> Any:
        body = await self._body(request)
        path = request.path.removeprefix(API)
        self._record(Request(request.method, path, kind, dict(request.query), body, token, status))
        return body

    async def _login(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            await self._note(request, "login", 401)
            return _error(401, 0, "401: Unauthorized")
        await self._note(request, "login")
        return _json(self.bot_user)

    async def _app_info(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            await self._note(request, "app_info", 401)
            return _error(401, 0, "401: Unauthorized")
        await self._note(request, "app_info")
        return _json(
            {
                "id": str(self.app_id),
                "name": "chatling",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": {
                    "id": "1",
                    "username": "owner",
                    "discriminator": "0",
                    "avatar": None,
                    "global_name": None,
                },
                "team": None,
                "verify_key": secrets.token_hex(32),
                "flags": 0,
                "bot": self.bot_user,
            }
        )

    async def _gateway_url(self, request: web.Request) -> web.Response:
        await self._note(request, "gateway")
        return _json({"url": self.gateway_url, "shards": 1})

    async def _sync(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            await self._note(request, "sync", 401)
            return _error(401, 0, "401: Unauthorized")
        if request.match_info["app"] != str(self.app_id):
            await self._note(request, "sync", 403)
            return _error(403, 50001, "Missing Access")
        body = await self._note(request, "sync")
        guild = request.match_info.get("guild")
        guild_id = int(guild) if guild is not None else None
        registered = []
        for command in body or []:
            entry = {
                **command,
                "id": str(self.snowflake()),
                "application_id": str(self.app_id),
                "version": str(self.snowflake()),
                "type": command.get("type", 1),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            registered.append(entry)
        self.commands[guild_id] = registered
        return _json(registered)

    def _message(self, sent: SentInteraction, body: dict[str, Any], kind: int) -> dict[str, Any]:
        return {
            "id": str(self.snowflake()),
            "type": kind,
            "content": body.get("content") or "",
            "channel_id": str(sent.channel_id),
            "author": self.bot_user,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": int(body.get("flags") or 0),
            "webhook_id": str(self.app_id),
            "application_id": str(self.app_id),
        }

    async def _callback(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        sent = self.interactions.get(token)
        if sent is None or request.match_info["iid"] != str(sent.id):
            await self._note(request, "callback", 404, token)
            return _error(404, 10062, "Unknown interaction")
        if sent.acked_type is not None:
            await self._note(request, "callback", 400, token)
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = await self._note(request, "callback", 200, token) or {}
        sent.acked_type = int(body.get("type", 0))
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        message = self._message(sent, data, 20)
        message["flags"] = flags | (128 if sent.acked_type == 5 else 0)  # 128: loading
        sent.original_id = int(message["id"])
        sent.messages.append(message)
        answer: dict[str, Any] = {
            "interaction": {
                "id": str(sent.id),
                "type": 2,
                "response_message_id": message["id"],
                "response_message_loading": sent.acked_type == 5,
                "response_message_ephemeral": bool(flags & EPHEMERAL),
            },
            "resource": {"type": sent.acked_type, "message": message},
        }
        return _json(answer)

    async def _followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        sent = self.interactions.get(token)
        if sent is None or request.match_info["app"] != str(self.app_id) or not sent.acked_type:
            await self._note(request, "followup", 404, token)
            return _error(404, 10015, "Unknown Webhook")
        body = await self._note(request, "followup", 200, token) or {}
        message = self._message(sent, body, 20)
        sent.messages.append(message)
        return _json(message)

    async def _original(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        sent = self.interactions.get(token)
        if (
            sent is None
            or request.match_info["mid"] != "@original"
            or sent.original_id is None
            or sent.original_deleted
        ):
            await self._note(request, "original", 404, token)
            return _error(404, 10008, "Unknown Message")
        body = await self._note(request, "original", 200, token) or {}
        if request.method == "DELETE":
            sent.original_deleted = True
            return web.Response(status=204)
        original = next(m for m in sent.messages if int(m["id"]) == sent.original_id)
        if request.method == "PATCH":
            original.update({k: v for k, v in body.items() if k in ("content", "flags")})
        return _json(original)

    async def _unknown(self, request: web.Request) -> web.Response:
        await self._note(request, "unknown", 404)
        return _error(404, 0, "404: Not Found")


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


__all__ = ["EPHEMERAL", "MANAGE_MESSAGES", "FakeDiscord", "Request", "SentInteraction"]
