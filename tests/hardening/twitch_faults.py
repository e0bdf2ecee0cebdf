"""The fake Twitch of devtools/fakes/twitch_server.py with faults that can be switched on.

``FaultyTwitch`` adds, without changing the fake's normal answers:

- a count and the arrival time of every request, per endpoint (``hits``,
  ``hit_times``), so a test can prove the client did not retry in a loop;
- bursts of HTTP 5xx on chosen endpoints (``fail_next(endpoint, n, status)``);
- slow answers (``delay[endpoint] = seconds``);
- raw websocket frames (``send_raw``: non-JSON, unknown message types, ...);
- a ``revocation`` message for every subscription (``revoke_subscriptions``),
  as Twitch sends when the user revokes the bot's authorisation;
- a flood of varied chat text (``flood_texts``).

Endpoints: ``validate``, ``token``, ``users``, ``subscribe``, ``send``, ``ws``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from devtools.fakes.twitch_server import FakeTwitch


class FaultyTwitch(FakeTwitch):
    """See the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hits: Counter[str] = Counter()
        self.hit_times: defaultdict[str, list[float]] = defaultdict(list)
        """Wall-clock (``time.time()``) arrival of each request, per endpoint."""
        self.failures: dict[str, list[int]] = {}
        """Endpoint -> statuses to answer with next (one per request), before normal answers."""
        self.delay: dict[str, float] = {}

    # -- scripting (call from the test's thread; read by the fake's loop) ---------------------

    def fail_next(self, endpoint: str, count: int, status: int = 503) -> None:
        """The next ``count`` requests to ``endpoint`` get ``status`` instead of an answer."""
        self.failures.setdefault(endpoint, []).extend([status] * count)

    async def send_raw(self, frames: Sequence[str]) -> None:
        """Send these text frames, as they are, on every live socket."""

        async def go() -> None:
            for conn in self.live_conns():
                for frame in frames:
                    await conn.ws.send_str(frame)

        await self.run(go)

    async def revoke_subscriptions(self) -> None:
        """A ``revocation`` (authorization_revoked) for each subscription of each live socket."""

        async def go() -> None:
            for conn in self.live_conns():
                for sub in list(conn.subscriptions):
                    payload = {"subscription": {**sub, "status": "authorization_revoked"}}
                    await self._send(conn, self._message("revocation", payload))
                conn.subscriptions.clear()

        await self.run(go)

    async def flood_texts(self, texts: Sequence[str], seconds: float) -> None:
        """``texts`` as notifications spread evenly over ``seconds``, from varied chatters."""

        async def go() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            count = len(texts)
            for i, text in enumerate(texts):
                conn = self._chat_target()
                assert conn is not None, "flood: no subscribed socket"
                event = self.chat_event(text, chatter=f"viewer{i % 397}")
                await self._send(conn, self._notification(conn, event))
                delay = start + (i + 1) * seconds / count - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

        await self.run(go)

    # -- faults around the fake's handlers ----------------------------------------------------

    async def _fault(self, endpoint: str) -> web.Response | None:
        self.hits[endpoint] += 1
        self.hit_times[endpoint].append(time.time())
        if self.delay.get(endpoint):
            await asyncio.sleep(self.delay[endpoint])
        pending = self.failures.get(endpoint)
        if pending:
            status = pending.pop(0)
            return web.json_response(
                {"error": "Service Unavailable", "status": status, "message": "fake fault"},
                status=status,
            )
        return None

    async def _validate(self, request: web.Request) -> web.Response:
        return await self._fault("validate") or await super()._validate(request)

    async def _token(self, request: web.Request) -> web.Response:
        return await self._fault("token") or await super()._token(request)

    async def _users(self, request: web.Request) -> web.Response:
        return await self._fault("users") or await super()._users(request)

    async def _subscribe(self, request: web.Request) -> web.Response:
        return await self._fault("subscribe") or await super()._subscribe(request)

    async def _chat_message(self, request: web.Request) -> web.Response:
        return await self._fault("send") or await super()._chat_message(request)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.hits["ws"] += 1
        self.hit_times["ws"].append(time.time())
        return await super()._websocket(request)
