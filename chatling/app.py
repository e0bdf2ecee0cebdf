"""The one composition root: a bot run, whether it replays a recording or goes live.

``run_bot`` wires what every run has: the store, the engine (Whisper loads in a
thread while vLLM starts), the stream row, the pipeline, the control room, the
signals, and one ``asyncio.TaskGroup`` with the sources and the reply loop. A
``Mode`` says only what differs: where messages come from, where replies go,
and what else runs beside them. ``replay`` (``chatling replay``) is the replay
mode here; live mode (``chatling run``) is ``chatling.live``.

Start-up order: check every input (chat log, audio, model, templates) before
anything slow starts, so a typo costs a second, not a minute. Stop: SIGINT or
SIGTERM stops the sources; the reply in flight finishes, the store flushes, the
engine shuts down. A stop slower than ``shutdown_report_s`` logs what it waits
for, and a second signal does not wait for the reply in flight
(``chatling.shutdown_watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from chatling.audio import probe_audio
from chatling.chatlog import read_chat_log
from chatling.core.clock import StreamClock
from chatling.core.events import ChatMessage
from chatling.core.paths import PROJECT_ROOT, resolve_path
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.engine import VllmEngine, resolve_model
from chatling.engine_factory import start_engine
from chatling.pipeline import EndOfStream, Pipeline, PipelineParts, PipelineStats
from chatling.prompt import PromptBuilder
from chatling.ratelimit import RateLimiter
from chatling.safety import SafetyFilter
from chatling.shutdown_watch import ShutdownWatch, StopSignals
from chatling.sinks import ChatSink, TerminalSink
from chatling.sources.replay import replay_audio, replay_chat
from chatling.store import Store
from chatling.transcribe import StreamingTranscriber, TranscriberOptions, load_whisper
from chatling.web import bot_handle, web_server

log = logging.getLogger(__name__)

DEMO_AUDIO = PROJECT_ROOT / "data" / "demo" / "stream.opus"
DEMO_CHAT = PROJECT_ROOT / "data" / "demo" / "chat.json"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay and how fast."""

    audio: Path = DEMO_AUDIO
    chat: Path = DEMO_CHAT
    speed: float = 1.0
    until_s: float | None = None
    """Stop after this many seconds of stream (``None``: the whole file)."""
    chat_format: str = "auto"


def build_safety(settings: Settings) -> SafetyFilter:
    """The safety filter from the default list plus the user's terms."""
    return SafetyFilter.from_settings(settings.reply)


def build_limiter(settings: Settings) -> RateLimiter:
    """The per-channel limiter for the bot's role (normal account or moderator)."""
    reply = settings.reply
    capacity = (
        reply.moderator_rate_messages if settings.twitch.is_moderator else reply.rate_messages
    )
    return RateLimiter(capacity, reply.rate_window_s)


@dataclass(frozen=True, slots=True)
class StreamRow:
    """How a run is logged in ``streams``."""

    title: str
    platform: str
    channel: str | None


@dataclass(frozen=True, slots=True)
class Platform:
    """Where replies go."""

    sink: ChatSink
    channel: str


@dataclass(slots=True)
class Running:
    """What a mode's sources and background tasks are given once the bot is up."""

    settings: Settings
    store: Store
    engine: VllmEngine
    whisper_model: Any
    stream_id: int
    clock: StreamClock
    parts: PipelineParts
    pipeline: Pipeline
    stack: contextlib.AsyncExitStack


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run did, for the summary and for tests."""

    stats: PipelineStats
    db_path: Path
    stream_id: int
    stream_seconds: float
    interrupted: bool


ReplayResult = RunResult
"""What ``replay`` returns (the name callers of ``chatling replay``'s code know)."""


class Mode(Protocol):
    """What differs between a replay and a live run (everything else is ``run_bot``)."""

    kind: str
    """``replay`` or ``live`` (the control room shows it)."""
    speed: float
    needs_whisper: bool
    sources_up: tuple[str, ...]
    watcher: Any
    """The adapter watcher the control room promotes through (``None``: the registry only)."""

    async def prepare(self, engine: VllmEngine) -> StreamRow:
        """After the engine started, before the stream row: what to log the run as."""
        ...

    async def open_platform(
        self, stack: contextlib.AsyncExitStack, store: Store, stream_id: int, safety: SafetyFilter
    ) -> Platform: ...

    async def started(self, running: Running) -> None:
        """The pipeline and the control room are up; the sources are not yet."""
        ...

    async def feed(self, running: Running) -> None:
        """The sources, into ``running.pipeline.inbox``; returns when they end (cancelled
        to stop)."""
        ...

    def background(self, running: Running) -> dict[str, Coroutine[Any, Any, None]]:
        """Tasks beside the reply loop, cancelled once it ends (by name)."""
        ...


async def _start_models(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    engine: VllmEngine | None,
    whisper_model: Any,
    needs_whisper: bool,
) -> tuple[VllmEngine, Any]:
    """The engine (started here unless given) and Whisper, loaded in a thread meanwhile."""
    loading = None
    if needs_whisper and whisper_model is None:
        loading = asyncio.create_task(asyncio.to_thread(load_whisper, settings.audio))
    try:
        if engine is None:
            engine = await stack.enter_async_context(start_engine(settings.model))
    finally:
        if loading is not None:
            whisper_model = await loading
    return engine, whisper_model


async def run_bot(
    settings: Settings,
    mode: Mode,
    display: Display,
    *,
    engine: VllmEngine | None = None,
    whisper_model: Any = None,
    shutdown_report_s: float = 45.0,
) -> RunResult:
    """Run the bot in ``mode`` until its sources end or a signal stops it.

    ``engine`` and ``whisper_model`` may be passed in (tests share one engine
    per session); otherwise they are built here and shut down at the end.
    """
    resolve_model(settings.model.name)
    safety = build_safety(settings)
    db_path = resolve_path(settings.storage.db_path)
    web = web_server(settings)  # None unless CHATLING_WEB__ENABLED

    async with contextlib.AsyncExitStack() as stack:
        signals = StopSignals()
        stack.callback(signals.close)  # first in, last out: a signal during clean-up is handled
        store = await stack.enter_async_context(
            Store.open(db_path, settings.storage.flush_interval_s, settings.storage.max_batch)
        )
        engine, whisper_model = await _start_models(
            stack, settings, engine, whisper_model, mode.needs_whisper
        )
        row = await mode.prepare(engine)
        stream_id = await store.start_stream(
            row.title,
            row.platform,
            row.channel,
            engine.model_name,
            engine.adapter.path if engine.adapter else None,
        )
        clock = StreamClock(mode.speed)
        platform = await mode.open_platform(stack, store, stream_id, safety)
        parts = PipelineParts(
            settings=settings.reply,
            engine=engine,
            prompts=PromptBuilder(settings.reply, engine.count_tokens),
            safety=safety,
            limiter=build_limiter(settings),
            store=store,
            stream_id=stream_id,
            sink=platform.sink,
            display=web.observe(display) if web else display,
            clock=clock,
            channel=platform.channel,
            seed=settings.model.seed,
            known_bots=frozenset(b.casefold() for b in settings.twitch.known_bots),
        )
        pipeline = Pipeline(parts)
        running = Running(
            settings, store, engine, whisper_model, stream_id, clock, parts, pipeline, stack
        )
        if web is not None:
            handle = bot_handle(
                settings,
                pipeline,
                store,
                stream_id,
                engine,
                db_path,
                mode.kind,
                mode.sources_up,
                mode.watcher,
            )
            await stack.enter_async_context(web.serving(handle))
        await mode.started(running)
        interrupted = await _serve(running, mode, signals, shutdown_report_s)
        await store.end_stream(stream_id)
        return RunResult(pipeline.stats, db_path, stream_id, clock.now(), interrupted)


async def _serve(
    running: Running, mode: Mode, signals: StopSignals, shutdown_report_s: float
) -> bool:
    """The sources and the reply loop under one TaskGroup; whether a signal stopped them."""
    pipeline = running.pipeline

    async def feed() -> None:
        try:
            await mode.feed(running)
        finally:
            await pipeline.inbox.put(EndOfStream())

    async with asyncio.TaskGroup() as tg:
        feeding = tg.create_task(feed(), name="sources")
        beside = [tg.create_task(c, name=n) for n, c in mode.background(running).items()]
        replying = tg.create_task(pipeline.run(), name="reply-loop")
        watch = ShutdownWatch(hurry=replying.cancel, grace_s=shutdown_report_s)

        def stop() -> None:
            if not watch.requested and not feeding.done():
                log.info("stopping: closing sources, finishing the reply in flight, flushing")
            feeding.cancel()
            watch.request()

        signals.install(stop)
        try:
            # Not `await replying`: a second signal cancels it (the hurry), and the task
            # group, not this body, deals with how the reply loop ended.
            await asyncio.wait({replying})
        finally:
            for task in beside:
                task.cancel()
    watch.close()
    return watch.requested


@dataclass(slots=True)
class ReplayMode:
    """A recorded stream: its chat log and audio on a stream clock; replies to the terminal."""

    request: ReplayRequest
    messages: list[ChatMessage]
    transcriber: StreamingTranscriber | None = None
    kind: str = "replay"
    needs_whisper: bool = True
    sources_up: tuple[str, ...] = ("chat", "audio")
    watcher: Any = None

    @property
    def speed(self) -> float:
        return self.request.speed

    async def prepare(self, engine: VllmEngine) -> StreamRow:
        return StreamRow(self.request.audio.name, "replay", "replay")

    async def open_platform(
        self, stack: contextlib.AsyncExitStack, store: Store, stream_id: int, safety: SafetyFilter
    ) -> Platform:
        return Platform(TerminalSink(), "replay")

    async def started(self, running: Running) -> None:
        return None

    def background(self, running: Running) -> dict[str, Coroutine[Any, Any, None]]:
        return {}

    async def feed(self, running: Running) -> None:
        settings, request = running.settings, self.request
        transcriber = self.transcriber or StreamingTranscriber(
            running.whisper_model,
            TranscriberOptions.from_settings(settings.audio, hotwords=settings.reply.bot_name),
        )
        inbox = running.pipeline.inbox
        async with asyncio.TaskGroup() as sources:
            sources.create_task(
                replay_chat(self.messages, running.clock, inbox, until=request.until_s)
            )
            sources.create_task(
                replay_audio(
                    request.audio,
                    running.clock,
                    transcriber,
                    inbox,
                    chunk_s=settings.audio.chunk_s,
                    until=request.until_s,
                )
            )


async def replay(
    settings: Settings,
    request: ReplayRequest,
    display: Display,
    *,
    engine: VllmEngine | None = None,
    whisper_model: Any = None,
    transcriber: StreamingTranscriber | None = None,
) -> ReplayResult:
    """Replay one recorded stream; returns when it ends or a signal stops it."""
    # Cheap checks first: each raises a ChatlingError naming the bad input.
    messages = read_chat_log(request.chat, format=request.chat_format)
    probe_audio(request.audio)
    mode = ReplayMode(request, messages, transcriber)
    return await run_bot(settings, mode, display, engine=engine, whisper_model=whisper_model)
