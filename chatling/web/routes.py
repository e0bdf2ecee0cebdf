"""Pages and JSON API of the control room (documented in the README, "Web API").

Every handler reuses what the bot already has: the pipeline's counters and
``pause()``/``resume()``/``say_now()``, ``Store.add_feedback`` (the table the
nightly DPO step reads), ``AdapterRegistry`` plus ``AdapterWatcher.sync`` for
promote/rollback, and ``chatling.store.runlog.RunLog`` for the last runs. Bad
input is a 4xx with ``{"error": "..."}`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from aiohttp import web

from chatling.core.errors import ConfigError, ModelError, StoreError
from chatling.core.paths import resolve_path
from chatling.core.settings import WebSettings
from chatling.learn.registry import AdapterRegistry
from chatling.learn.watcher import AdapterWatcher
from chatling.store.store import FEEDBACK_MARKS
from chatling.web.hub import EventHub, adapter_name

if TYPE_CHECKING:
    from chatling.pipeline import Pipeline
    from chatling.store import Store

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "overlay.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
KEEPALIVE_S = 15.0
TOPICS = frozenset({"overlay", "dashboard"})


@dataclass(frozen=True, slots=True)
class BotHandle:
    """What the pages may read and drive of one running bot (built by the app)."""

    pipeline: Pipeline
    store: Store
    stream_id: int
    engine: Any
    """``VllmEngine`` (or any engine with ``model_name``, ``adapter``, ``set_adapter``)."""
    registry: AdapterRegistry
    db_path: Path
    mode: str
    """``replay`` or ``live``."""
    sources: tuple[str, ...]
    watcher: AdapterWatcher | None = None
    """The live watcher of ``active.json``; replays get one made here (not polling)."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _median(values: list[float]) -> float | None:
    recent = values[-50:]
    return round(statistics.median(recent), 3) if recent else None


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


class Routes:
    def __init__(self, settings: WebSettings, hub: EventHub, bot: BotHandle, bot_name: str) -> None:
        self.settings = settings
        self.hub = hub
        self.bot = bot
        self.bot_name = bot_name
        self.watcher = bot.watcher or AdapterWatcher(bot.registry, bot.engine)
        if bot.watcher is None:
            # Replays do not watch the pointer; start from what the engine serves.
            self.watcher.serving = adapter_name(getattr(bot.engine.adapter, "path", None))
        self._adapter_lock = asyncio.Lock()
        hub.set_status_source(self.status)

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/overlay", self.overlay)
        r.add_get("/dashboard", self.dashboard)
        r.add_get("/overlay.css", self.overlay_css)
        r.add_get("/static/{name}", self.static)
        r.add_get("/api/status", self.api(self.get_status))
        r.add_get("/api/events", self.events)
        r.add_get("/api/replies", self.api(self.get_replies))
        r.add_post("/api/replies/{id}/mark", self.api(self.post_mark))
        r.add_post("/api/pause", self.api(self.post_pause))
        r.add_post("/api/resume", self.api(self.post_resume))
        r.add_post("/api/say", self.api(self.post_say))
        r.add_get("/api/adapters", self.api(self.get_adapters))
        r.add_post("/api/adapters/promote", self.api(self.post_promote))
        r.add_post("/api/adapters/rollback", self.api(self.post_rollback))
        r.add_get("/api/runs", self.api(self.get_runs))

    @staticmethod
    def api(fn: Any) -> Any:
        """A JSON handler: its dict becomes the response, an ``ApiError`` a 4xx/5xx."""

        async def handler(request: web.Request) -> web.Response:
            try:
                return web.json_response(await fn(request))
            except ApiError as exc:
                return web.json_response({"error": str(exc)}, status=exc.status)

        return handler

    # -- pages ----------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": "/dashboard"})

    def _page(self, name: str, **values: Any) -> web.Response:
        text = (STATIC / name).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", html.escape(str(value), quote=True))
        return web.Response(text=text, content_type="text/html")

    async def overlay(self, request: web.Request) -> web.Response:
        s = self.settings
        return self._page(
            "overlay.html",
            fade_s=s.overlay_fade_s,
            max_lines=s.overlay_max_lines,
            bot_name=self.bot_name,
        )

    async def dashboard(self, request: web.Request) -> web.Response:
        return self._page("dashboard.html", bot_name=self.bot_name)

    async def overlay_css(self, request: web.Request) -> web.Response:
        path = resolve_path(self.settings.overlay_css)
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as exc:
            log.error("web: cannot read the overlay CSS %s (%s)", path, exc.strerror)
            raise web.HTTPNotFound(
                text=f"overlay CSS {path.name} is missing: {exc.strerror}"
            ) from None
        return web.Response(text=text, content_type="text/css")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        text = (STATIC / name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=STATIC_FILES[name])

    # -- server-sent events -----------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``text/event-stream`` of one topic (``?topics=overlay`` or ``dashboard``)."""
        topics = frozenset(t for t in request.query.get("topics", "dashboard").split(",") if t)
        if not topics or not topics <= TOPICS:
            return web.json_response(
                {"error": f"topics must be among {sorted(TOPICS)}"}, status=400
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        sub = self.hub.subscribe(topics)
        try:
            await response.write(b"retry: 1000\n\n")
            if "dashboard" in topics:
                await response.write(_sse("status", json.dumps(self.status())))
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is None:
                    break
                await response.write(_sse(event.name, event.data))
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            self.hub.unsubscribe(sub)
        return response

    # -- status and replies -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        bot, p = self.bot, self.bot.pipeline
        st = p.stats
        engine = bot.engine
        return {
            "mode": bot.mode,
            "sources": list(bot.sources),
            "paused": p.paused,
            "chat_in": st.chat_in,
            "utterances_in": st.utterances_in,
            "posted": st.posted,
            "blocked": st.blocked,
            "rate_limited": st.rate_limited,
            "failed": st.failed + st.store_unhealthy,
            "preempted": st.preempted,
            "engine_latency_p50_s": _median(st.latencies_s),
            "first_token_p50_s": _median(st.first_token_s),
            "transcription_lag_p50_s": _median(st.transcription_lag_s),
            "model": PurePath(str(engine.model_name)).name,
            "adapter": adapter_name(getattr(engine.adapter, "path", None)),
            "store_healthy": bot.store.healthy,
            "pages": self.hub.counts(),
        }

    async def get_status(self, request: web.Request) -> dict[str, Any]:
        return self.status()

    async def get_replies(self, request: web.Request) -> dict[str, Any]:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise ApiError(400, "limit must be a whole number") from None
        if not 1 <= limit <= 1000:
            raise ApiError(400, "limit must be between 1 and 1000")
        return {"replies": list(self.hub.feed)[-limit:]}

    async def post_mark(self, request: web.Request) -> dict[str, Any]:
        try:
            reply_id = int(request.match_info["id"])
        except ValueError:
            raise ApiError(400, "the reply id must be a whole number") from None
        body = await _json_body(request)
        mark = body.get("mark")
        if mark not in FEEDBACK_MARKS:
            raise ApiError(400, f"mark must be one of {sorted(FEEDBACK_MARKS)}")
        reply = self.hub.find(reply_id)
        if reply is None:
            raise ApiError(404, f"no reply {reply_id} among the last {self.settings.feed_size}")
        if reply["status"] != "posted" or not reply["chosen"]:
            raise ApiError(
                409, f"reply {reply_id} was {reply['status']}, not posted: nothing to mark"
            )
        bot = self.bot
        try:
            # The nightly DPO step resolves a mark by its text to the posted bot_replies row.
            bot.store.add_feedback(
                bot.stream_id,
                f"dashboard:{bot.stream_id}:{reply_id}",
                mark,
                "dashboard",
                "dashboard",
                reply["chosen"],
            )
        except StoreError as exc:
            raise ApiError(503, f"the mark was not logged: {exc}") from None
        reply["mark"] = mark
        self.hub.publish("dashboard", "mark", {"id": reply_id, "mark": mark})
        log.info("web: reply %d marked %s on the dashboard", reply_id, mark)
        return {"id": reply_id, "mark": mark}

    # -- controls ----------------------------------------------------------------------

    async def post_pause(self, request: web.Request) -> dict[str, Any]:
        await _json_body(request)
        self.bot.pipeline.pause()
        self.hub.push_status_now()
        return {"paused": True}

    async def post_resume(self, request: web.Request) -> dict[str, Any]:
        await _json_body(request)
        self.bot.pipeline.resume()
        self.hub.push_status_now()
        return {"paused": False}

    async def post_say(self, request: web.Request) -> dict[str, Any]:
        await _json_body(request)
        p = self.bot.pipeline
        if p.paused:
            raise ApiError(409, "the bot is paused: resume it first")
        if not p.say_now():
            raise ApiError(409, "a reply is being generated: try again when it is out")
        return {"queued": True}

    # -- adapters and runs --------------------------------------------------------------

    async def get_adapters(self, request: web.Request) -> dict[str, Any]:
        try:
            versions = await asyncio.to_thread(self.bot.registry.versions)
        except ConfigError as exc:
            raise ApiError(500, str(exc)) from None
        return {
            "serving": adapter_name(getattr(self.bot.engine.adapter, "path", None)),
            "versions": [
                {
                    "version": v.name,
                    "active": v.active,
                    "created_at": v.created_at,
                    "summary": v.summary,
                }
                for v in versions
            ],
        }

    async def post_promote(self, request: web.Request) -> dict[str, Any]:
        body = await _json_body(request)
        version = body.get("version")
        if not isinstance(version, str):
            raise ApiError(400, 'give the version to promote: {"version": "v0003"}')
        registry = self.bot.registry
        async with self._adapter_lock:
            try:
                registry.path_of(version)
                await asyncio.to_thread(registry.promote, version)
            except (ConfigError, ModelError) as exc:
                raise ApiError(400, str(exc)) from None
            await self.watcher.sync()
            if self.watcher.refused == version:
                # The engine refused it: put the pointer back, so nothing changed.
                with contextlib.suppress(ConfigError, ModelError):
                    await asyncio.to_thread(registry.rollback)
                await self.watcher.sync()
                raise ApiError(409, f"the engine refused adapter {version}; see the bot's log")
        self.hub.push_status_now()
        return await self.get_adapters(request)

    async def post_rollback(self, request: web.Request) -> dict[str, Any]:
        await _json_body(request)
        async with self._adapter_lock:
            try:
                await asyncio.to_thread(self.bot.registry.rollback)
            except (ConfigError, ModelError) as exc:
                raise ApiError(409, str(exc)) from None
            await self.watcher.sync()
        self.hub.push_status_now()
        return await self.get_adapters(request)

    async def get_runs(self, request: web.Request) -> dict[str, Any]:
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            raise ApiError(400, "limit must be a whole number") from None
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100")
        try:
            rows = await asyncio.to_thread(_runs, self.bot.db_path, limit)
        except StoreError as exc:
            raise ApiError(503, str(exc)) from None
        return {"runs": rows}


def _runs(db_path: Path, limit: int) -> list[dict[str, Any]]:
    from chatling.store.runlog import RunLog

    runs = RunLog(db_path)
    try:
        rows = runs.rows(limit)
    finally:
        runs.close()
    keep = (
        "id", "trigger", "status", "reason", "started_at", "ended_at", "new_pairs",
        "preference_pairs", "current_version", "candidate_version", "current_metrics",
        "candidate_metrics",
    )  # fmt: skip
    out = []
    for row in rows:
        item = {k: row.get(k) for k in keep}
        for key in ("current_metrics", "candidate_metrics"):
            if isinstance(item[key], str):
                with contextlib.suppress(ValueError):
                    item[key] = json.loads(item[key])
        out.append(item)
    return out


def _sse(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()
