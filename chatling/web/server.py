"""The web server of the control room: aiohttp on the bot's own event loop.

Why aiohttp: it is already installed (twitchio and discord.py depend on it),
it runs on the asyncio loop the bot already has, so a handler reads the
pipeline's counters and calls ``pause()`` directly, with no thread, lock or
IPC; and it streams responses, which is all server-sent events need. A
second framework (FastAPI + uvicorn) would bring its own server loop and
more dependencies for the same few routes.

Started only when ``CHATLING_WEB__ENABLED`` is set, as one more context in the
app's exit stack: it starts after the pipeline is built and stops before the
store closes. Bound to 127.0.0.1 by default.

Security, on every request (``guard``):

- the token (``chatling.web.token``): an ``Authorization: Bearer`` or
  ``X-Chatling-Token`` header, or the ``chatling_token`` cookie, which a page
  link's ``?token=`` sets (HttpOnly, SameSite=Strict) before redirecting to
  the same page without it, so the token does not stay in the address bar;
  no token or a wrong one: 401;
- requests that change something (POST) refuse other sites: a
  ``Sec-Fetch-Site`` other than ``same-origin``/``none``, or an ``Origin`` that
  is not this server's, is a 403; the body must be JSON (a cross-site form
  cannot send that without a CORS preflight, which nothing here answers);
- no access log (it would record ``?token=``); no secret is rendered: the
  pages show adapter names, not paths, and never a token.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import SecretStr

from chatling.core.errors import ConfigError
from chatling.core.paths import resolve_path
from chatling.core.settings import Settings, WebSettings
from chatling.display import Display
from chatling.learn.registry import AdapterRegistry
from chatling.web.hub import EventHub, ObservedDisplay
from chatling.web.routes import BotHandle, Routes
from chatling.web.token import load_or_create_token

if TYPE_CHECKING:
    from chatling.learn.watcher import AdapterWatcher
    from chatling.pipeline import Pipeline
    from chatling.store import Store

log = logging.getLogger(__name__)

COOKIE = "chatling_token"
PAGES = frozenset({"/overlay", "/dashboard"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_path(settings: WebSettings) -> Path:
    return resolve_path(settings.token_file)


def page_urls(settings: WebSettings, token: SecretStr) -> dict[str, str]:
    """The links to give OBS and the moderators (they carry the token: keep them private)."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    secret = token.get_secret_value()
    base = f"http://{host}:{settings.port}"
    return {page: f"{base}/{page}?token={secret}" for page in ("overlay", "dashboard")}


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _given_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip()
    return request.headers.get("X-Chatling-Token") or request.cookies.get(COOKIE)


def _cross_site(request: web.Request) -> str | None:
    """Why a request that changes something is refused as cross-site, or ``None``."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return "cross-site request refused (Origin is not this server)"
    return None


def make_guard(token: SecretStr) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    secret = token.get_secret_value().encode()

    def valid(given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), secret)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        link_token = request.query.get("token")
        if link_token is not None and request.method == "GET" and request.path in PAGES:
            if not valid(link_token):
                return _unauthorised(request)
            response: web.StreamResponse = web.Response(
                status=303, headers={"Location": request.path}
            )
            response.set_cookie(
                COOKIE, link_token, httponly=True, samesite="Strict", path="/", max_age=400 * 86400
            )
            response.headers.update(SECURITY_HEADERS)
            return response
        if not valid(_given_token(request)):
            return _unauthorised(request)
        if request.method not in SAFE_METHODS:
            refused = _cross_site(request)
            if refused is not None:
                log.warning("web: %s %s: %s", request.method, request.path, refused)
                return _json_error(403, refused)
            if request.content_type != "application/json":
                return _json_error(415, "send a JSON body (Content-Type: application/json)")
        response = await handler(request)
        if not response.prepared:  # an event stream has sent its headers already
            for key, value in SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
        return response

    return guard


def _unauthorised(request: web.Request) -> web.Response:
    message = (
        "missing or wrong token: open the link that `chatling web url` prints "
        "(or send Authorization: Bearer <token>)"
    )
    if request.path.startswith("/api/"):
        response = _json_error(401, message)
    else:
        response = web.Response(status=401, text=f"401 Unauthorized: {message}\n")
    response.headers.update(SECURITY_HEADERS)
    return response


class WebServer:
    """The overlay, the dashboard and the JSON API of one running bot."""

    def __init__(self, settings: WebSettings, *, bot_name: str = "chatling") -> None:
        self.settings = settings
        self.bot_name = bot_name
        self.token = load_or_create_token(token_path(settings))
        self.hub = EventHub(settings.feed_size, overlay_speech=settings.overlay_speech)
        self.url: str | None = None

    def observe(self, display: Display) -> ObservedDisplay:
        """``display``, with every event also sent to the pages (pass it to the pipeline)."""
        return ObservedDisplay(display, self.hub)

    def build_app(self, bot: BotHandle) -> web.Application:
        app = web.Application(middlewares=[make_guard(self.token)], client_max_size=64 * 1024)
        Routes(self.settings, self.hub, bot, self.bot_name).add_to(app)
        return app

    @contextlib.asynccontextmanager
    async def serving(self, bot: BotHandle) -> AsyncIterator[str]:
        """Serve until the block ends; yields the base URL."""
        s = self.settings
        runner = web.AppRunner(self.build_app(bot), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, shutdown_timeout=2.0)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"web: cannot listen on {s.host}:{s.port} ({exc.strerror}); set "
                "CHATLING_WEB__PORT to a free port or stop what uses it"
            ) from None
        self.url = f"http://{s.host}:{s.port}"
        log.info("web: overlay and dashboard on %s (links: `chatling web url`)", self.url)
        try:
            yield self.url
        finally:
            self.hub.close()  # ends the event streams, so cleanup does not wait on them
            await runner.cleanup()
            log.info("web: stopped")


def web_server(settings: Settings) -> WebServer | None:
    """The control room of this run, or ``None`` unless ``CHATLING_WEB__ENABLED``.

    Built before anything slow starts, so a bad token file fails in a second."""
    if not settings.web.enabled:
        return None
    return WebServer(settings.web, bot_name=settings.reply.bot_name)


def bot_handle(
    settings: Settings,
    pipeline: Pipeline,
    store: Store,
    stream_id: int,
    engine: Any,
    db_path: Path,
    mode: str,
    sources: tuple[str, ...],
    watcher: AdapterWatcher | None = None,
) -> BotHandle:
    """What the pages drive, with the adapter registry of ``schedule.adapters_dir``."""
    adapters_dir = resolve_path(settings.schedule.adapters_dir)
    registry = watcher.registry if watcher else AdapterRegistry(adapters_dir)
    return BotHandle(pipeline, store, stream_id, engine, registry, db_path, mode, sources, watcher)


def url_lines(settings: Settings) -> list[str]:
    """What `chatling web url` prints: both links (the token made if there is none yet)."""
    token = load_or_create_token(token_path(settings.web))
    urls = page_urls(settings.web, token)
    lines = [
        f"overlay (OBS browser source, transparent): {urls['overlay']}",
        f"dashboard (streamer and moderators):        {urls['dashboard']}",
        f"API: send 'Authorization: Bearer <token>'; token in {token_path(settings.web)} (0600)",
    ]
    if not settings.web.enabled:
        lines.append("note: set CHATLING_WEB__ENABLED=true so `chatling run`/`replay` serve them")
    return lines
