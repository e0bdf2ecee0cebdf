"""Live mode (``chatling run``): Twitch chat, Discord ``/chat`` and loopback audio.

The same pipeline as a replay (inbox -> context -> policy -> engine -> filter ->
limiter -> store), fed by whichever live sources are configured: Twitch when a
channel and a token are set, Discord when a token is set, loopback audio
unless disabled. A source that is not configured is skipped with one log
line; nothing at all configured is an error. All of them run under one
``asyncio.TaskGroup``; SIGINT/SIGTERM (or ``run_for_s`` in tests) stop the
sources first, then the reply loop finishes its reply in flight, the store
flushes, and the engine shuts down. Every minute a status line reports
messages in, replies out, blocked, limited, transcription lag and engine
latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatling.app import build_limiter, build_safety
from chatling.core.clock import StreamClock
from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.core.paths import resolve_path
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.engine import VllmEngine, resolve_model
from chatling.engine_factory import start_engine
from chatling.learn.registry import AdapterRegistry
from chatling.learn.schedule import NightlyScheduler
from chatling.learn.watcher import AdapterWatcher
from chatling.pipeline import EndOfStream, Pipeline, PipelineParts, PipelineStats
from chatling.prompt import PromptBuilder
from chatling.shutdown_watch import ShutdownWatch, StopSignals
from chatling.store import Store
from chatling.web import bot_handle, web_server

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveResult:
    stats: PipelineStats
    db_path: Path
    stream_id: int
    sources: tuple[str, ...]


class LogSink:
    """No platform to post to (Discord or audio only): replies go to the log and store."""

    async def send(self, text: str, reply_to: ChatMessage | None) -> bool:
        log.info("reply (no chat platform configured): %s", text)
        return True


def twitch_configured(settings: Settings) -> bool:
    t = settings.twitch
    has_token = bool(t.bot_token.get_secret_value()) or resolve_path(t.token_file).exists()
    return bool(t.channel and t.client_id and has_token)


def _median_ms(values: list[float]) -> str:
    recent = values[-50:]
    return f"{statistics.median(recent) * 1000:.0f} ms" if recent else "-"


async def _report_status(pipeline: Pipeline, interval_s: float, extra: dict[str, Any]) -> None:
    """Log one status line every ``interval_s`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        st = pipeline.stats
        lag = statistics.median(st.transcription_lag_s[-50:]) if st.transcription_lag_s else None
        log.info(
            "status: %d chat in, %d utterances, %d replies posted, %d blocked, %d rate-limited, "
            "%d failed; transcription lag %s; engine latency p50 %s%s%s",
            st.chat_in,
            st.utterances_in,
            st.posted,
            st.blocked,
            st.rate_limited,
            st.failed,
            f"{lag:.1f} s" if lag is not None else "-",
            _median_ms(st.latencies_s),
            "; paused" if pipeline.paused else "",
            "".join(f"; {k} {v()}" for k, v in extra.items()),
        )


async def run_live(
    settings: Settings,
    *,
    engine: VllmEngine | None = None,
    whisper_model: Any = None,
    run_for_s: float | None = None,
    status_interval_s: float = 60.0,
    display: Display | None = None,
    env_file: str | None = ".env",
    schedule_trigger: Any = None,
    adapter_poll_s: float = 2.0,
    shutdown_report_s: float = 45.0,
) -> LiveResult:
    """Run the bot live until a signal (or ``run_for_s``) stops it.

    ``schedule_trigger`` replaces the cron trigger of the nightly retrain (tests).
    A stop that takes longer than ``shutdown_report_s`` logs what it waits for;
    a second signal stops without the reply in flight (``chatling.shutdown_watch``).
    """
    use_twitch = twitch_configured(settings)
    use_discord = bool(settings.discord.token.get_secret_value())
    use_audio = settings.audio.enabled
    if not use_twitch:
        log.info(
            "Twitch disabled: set CHATLING_TWITCH__CHANNEL, __CLIENT_ID and run "
            "`chatling auth twitch` (or set __BOT_TOKEN)"
        )
    if not use_discord:
        log.info("Discord disabled: CHATLING_DISCORD__TOKEN is not set")
    if not use_audio:
        log.info("loopback audio disabled (CHATLING_AUDIO__ENABLED=false)")
    if not (use_twitch or use_discord):
        raise ConfigError(
            "nothing to chat in: configure Twitch (CHATLING_TWITCH__CHANNEL, __CLIENT_ID and "
            "`chatling auth twitch`) and/or Discord (CHATLING_DISCORD__TOKEN); see .env.example"
        )
    resolve_model(settings.model.name)
    safety = build_safety(settings)
    db_path = resolve_path(settings.storage.db_path)
    display = display or Display(show_chat=True)
    sources: list[str] = []
    web = web_server(settings)  # None unless CHATLING_WEB__ENABLED

    async with contextlib.AsyncExitStack() as stack:
        signals = StopSignals()
        stack.callback(signals.close)  # first in, last out: a signal during clean-up is handled
        store = await stack.enter_async_context(
            Store.open(db_path, settings.storage.flush_interval_s, settings.storage.max_batch)
        )
        if use_audio and whisper_model is None:
            from chatling.transcribe import load_whisper

            loading = asyncio.create_task(asyncio.to_thread(load_whisper, settings.audio))
        else:
            loading = None
        try:
            if engine is None:
                engine = await stack.enter_async_context(start_engine(settings.model))
        finally:
            if loading is not None:
                whisper_model = await loading
        watcher = AdapterWatcher(
            AdapterRegistry(resolve_path(settings.schedule.adapters_dir)), engine, adapter_poll_s
        )
        await watcher.sync()  # the pointer file, when there is one, wins over model.adapter
        stream_start = time.time()
        clock = StreamClock(1.0)
        title = f"live {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        stream_id = await store.start_stream(
            title,
            "twitch" if use_twitch else "live",
            settings.twitch.channel or None,
            engine.model_name,
            engine.adapter.path if engine.adapter else None,
        )
        twitch = None
        if use_twitch:
            from chatling.platforms.twitch.client import TwitchChat
            from chatling.platforms.twitch.commands import MarkCommands

            twitch = await stack.enter_async_context(
                TwitchChat(
                    settings.twitch,
                    None,
                    stream_start=stream_start,
                    token_file=resolve_path(settings.twitch.token_file),
                    drop_backoff_s=settings.twitch.drop_backoff_s,
                    store=store,
                    stream_id=stream_id,
                    marks=MarkCommands(
                        settings.schedule.good_command, settings.schedule.bad_command
                    ),
                    safety=safety,  # the channel's Twitch blocked terms join the filter
                )
            )
            sources.append("twitch")
        parts = PipelineParts(
            settings=settings.reply,
            engine=engine,
            prompts=PromptBuilder(settings.reply, engine.count_tokens),
            safety=safety,
            limiter=build_limiter(settings),
            store=store,
            stream_id=stream_id,
            sink=twitch.sink if twitch is not None else LogSink(),
            display=web.observe(display) if web else display,
            clock=clock,
            channel=twitch.channel if twitch is not None else "live",
            seed=settings.model.seed,
            known_bots=frozenset(b.casefold() for b in settings.twitch.known_bots),
        )
        pipeline = Pipeline(parts)
        if web is not None:
            up = ("twitch",) * use_twitch + ("discord",) * use_discord + ("audio",) * use_audio
            handle = bot_handle(
                settings, pipeline, store, stream_id, engine, db_path, "live", up, watcher
            )
            await stack.enter_async_context(web.serving(handle))
        if settings.schedule.enabled:
            idle_s = settings.schedule.live_idle_minutes * 60.0

            def is_live() -> bool:
                last = pipeline.stats.last_activity
                return last is not None and time.monotonic() - last < idle_s

            await stack.enter_async_context(
                NightlyScheduler(
                    settings.schedule, is_live, env_file=env_file, trigger=schedule_trigger
                )
            )
        if twitch is not None:
            twitch.attach(pipeline.inbox, control=pipeline)
        extra: dict[str, Any] = {}

        async def feed() -> None:
            try:
                async with asyncio.TaskGroup() as group:
                    if use_discord:
                        group.create_task(
                            _run_discord(settings, parts, pipeline, extra, store),
                            name="discord",
                        )
                    if use_audio:
                        group.create_task(
                            _run_audio(settings, whisper_model, clock, pipeline), name="audio"
                        )
                    if run_for_s is not None:
                        await asyncio.sleep(run_for_s)
                        raise _StopRun
                    await asyncio.Future()  # until cancelled by a signal
            except* _StopRun:
                pass
            finally:
                await pipeline.inbox.put(EndOfStream())

        async with asyncio.TaskGroup() as tg:
            feeding = tg.create_task(feed(), name="sources")
            status = tg.create_task(_report_status(pipeline, status_interval_s, extra))
            watching = tg.create_task(watcher.run(), name="adapter-watch")
            running = tg.create_task(pipeline.run(), name="reply-loop")

            watch = ShutdownWatch(hurry=running.cancel, grace_s=shutdown_report_s)

            def stop() -> None:
                if not watch.requested:
                    log.info("stopping: closing sources, finishing the reply in flight, flushing")
                    feeding.cancel()
                watch.request()

            signals.install(stop)
            try:
                # Not `await running`: a second signal cancels it (the hurry), and the task
                # group, not this body, deals with how the reply loop ended.
                await asyncio.wait({running})
            finally:
                status.cancel()
                watching.cancel()
        await store.end_stream(stream_id)
        watch.close()
        if use_audio:
            sources.append("audio")
        if use_discord:
            sources.append("discord")
        return LiveResult(pipeline.stats, db_path, stream_id, tuple(sources))


class _StopRun(Exception):
    """``run_for_s`` elapsed."""


async def _run_discord(
    settings: Settings,
    parts: PipelineParts,
    pipeline: Pipeline,
    extra: dict[str, Any],
    store: Store,
) -> None:
    from chatling.platforms.discord_bot import DiscordBot
    from chatling.responder import ChatResponder

    responder = ChatResponder(
        settings.reply,
        parts.engine,
        parts.prompts,
        parts.safety,
        parts.store,
        parts.stream_id,
        context=lambda: pipeline.context.snapshot(parts.clock.now()),
        seed=parts.seed,
    )
    bot = DiscordBot(
        settings.discord,
        responder,
        store=store,
        stream_id=parts.stream_id,
        good_reaction=settings.schedule.good_reaction,
        bad_reaction=settings.schedule.bad_reaction,
    )
    extra["discord answers"] = lambda: bot.answered
    await bot.run()  # raises if the connection dies for good (e.g. a revoked token)


async def _run_audio(
    settings: Settings, whisper_model: Any, clock: StreamClock, pipeline: Pipeline
) -> None:
    from chatling.sources.loopback import capture_loopback
    from chatling.transcribe import StreamingTranscriber, TranscriberOptions

    options = TranscriberOptions.from_settings(settings.audio, hotwords=settings.reply.bot_name)
    transcriber = StreamingTranscriber(whisper_model, options, start_offset=clock.now())
    await capture_loopback(
        settings.audio.device,
        transcriber,
        pipeline.inbox,
        stream_clock=clock,
        chunk_s=settings.audio.chunk_s,
    )
