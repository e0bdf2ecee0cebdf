"""One aiohttp app on its own event loop in a thread: the scaffolding every fake shares.

The fakes run beside the code under test, whose event loop (pytest's, or a
benchmark's) must stay free to be blocked or busy without stalling the
server, so each fake gets a loop of its own in a thread. A subclass adds its
routes (``add_routes``) and closes what it holds open (``close_connections``);
``run`` hands a coroutine to the fake's loop from the test's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self

from aiohttp import web


class ThreadedServer:
    """An aiohttp server on 127.0.0.1 (a free port) in a thread of its own; a context manager."""

    thread_name = "fake-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The fake's endpoints."""
        raise NotImplementedError

    async def close_connections(self) -> None:
        """Close what the fake holds open (WebSockets) before the server stops."""

    def __enter__(self) -> Self:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._stop())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name=self.thread_name)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.thread_name} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def run(self, fn: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        """Run ``fn()`` on the fake's loop; await the result from the test's loop."""
        assert self._loop is not None
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(fn(), self._loop)
        return asyncio.wrap_future(future)

    async def _start(self) -> None:
        app = web.Application()
        self.add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        await self.close_connections()
        if self._runner is not None:
            await self._runner.cleanup()
