"""One replay of a recorded stream through the whole pipeline (``chatling replay``).

Start-up order: check every input (chat log, audio, model, templates) before
anything slow starts, so a typo costs a second, not a minute; then open the
store, load Whisper (in a thread) while the vLLM engine starts, and run the
sources and the reply loop under one ``asyncio.TaskGroup``. SIGINT or SIGTERM
stops the sources; the reply in flight finishes, the store flushes, the engine
shuts down. Live mode (``chatling run``) reuses the same pipeline with other
sources and sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatling.audio import probe_audio
from chatling.chatlog import read_chat_log
from chatling.core.clock import StreamClock
from chatling.core.paths import PROJECT_ROOT, resolve_path
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.engine import VllmEngine, resolve_model
from chatling.engine_factory import start_engine
from chatling.pipeline import EndOfStream, Pipeline, PipelineParts, PipelineStats
from chatling.prompt import PromptBuilder
from chatling.ratelimit import RateLimiter
from chatling.safety import SafetyFilter
from chatling.shutdown_watch import StopSignals
from chatling.sinks import TerminalSink
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


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did, for the summary and for tests."""

    stats: PipelineStats
    db_path: Path
    stream_id: int
    stream_seconds: float
    interrupted: bool


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


async def replay(
    settings: Settings,
    request: ReplayRequest,
    display: Display,
    *,
    engine: VllmEngine | None = None,
    whisper_model: Any = None,
    transcriber: StreamingTranscriber | None = None,
) -> ReplayResult:
    """Replay one recorded stream; returns when it ends or a signal stops it.

    ``engine`` and ``whisper_model`` may be passed in (tests share one engine
    per session); otherwise they are built here and shut down at the end.
    """
    # Cheap checks first: each raises a ChatlingError naming the bad input.
    messages = read_chat_log(request.chat, format=request.chat_format)
    probe_audio(request.audio)
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
        if whisper_model is None:
            loading = asyncio.create_task(asyncio.to_thread(load_whisper, settings.audio))
            try:
                if engine is None:
                    engine = await stack.enter_async_context(start_engine(settings.model))
            finally:
                whisper_model = await loading
        elif engine is None:
            engine = await stack.enter_async_context(start_engine(settings.model))
        adapter = engine.adapter.path if engine.adapter else None
        stream_id = await store.start_stream(
            request.audio.name, "replay", "replay", engine.model_name, adapter
        )
        clock = StreamClock(request.speed)
        parts = PipelineParts(
            settings=settings.reply,
            engine=engine,
            prompts=PromptBuilder(settings.reply, engine.count_tokens),
            safety=safety,
            limiter=build_limiter(settings),
            store=store,
            stream_id=stream_id,
            sink=TerminalSink(),
            display=web.observe(display) if web else display,
            clock=clock,
            seed=settings.model.seed,
            known_bots=frozenset(b.casefold() for b in settings.twitch.known_bots),
        )
        pipeline = Pipeline(parts)
        if web is not None:
            handle = bot_handle(
                settings, pipeline, store, stream_id, engine, db_path, "replay", ("chat", "audio")
            )
            await stack.enter_async_context(web.serving(handle))
        transcriber = transcriber or StreamingTranscriber(
            whisper_model,
            TranscriberOptions.from_settings(settings.audio, hotwords=settings.reply.bot_name),
        )
        interrupted = False

        async def feed() -> None:
            try:
                async with asyncio.TaskGroup() as sources:
                    sources.create_task(
                        replay_chat(messages, clock, pipeline.inbox, until=request.until_s)
                    )
                    sources.create_task(
                        replay_audio(
                            request.audio,
                            clock,
                            transcriber,
                            pipeline.inbox,
                            chunk_s=settings.audio.chunk_s,
                            until=request.until_s,
                        )
                    )
            finally:
                await pipeline.inbox.put(EndOfStream())

        async with asyncio.TaskGroup() as tg:
            feeding = tg.create_task(feed(), name="sources")
            tg.create_task(pipeline.run(), name="reply-loop")

            def stop() -> None:
                nonlocal interrupted
                if not interrupted and not feeding.done():
                    log.info("stopping: finishing the reply in flight and flushing the log")
                interrupted = True
                feeding.cancel()

            signals.install(stop)
        await store.end_stream(stream_id)
        return ReplayResult(
            stats=pipeline.stats,
            db_path=db_path,
            stream_id=stream_id,
            stream_seconds=clock.now(),
            interrupted=interrupted,
        )
