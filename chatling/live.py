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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatling.app import Platform, Running, StreamRow, run_bot
from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.core.paths import resolve_path
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.engine import VllmEngine
from chatling.learn.registry import AdapterRegistry
from chatling.learn.schedule import NightlyScheduler
from chatling.learn.watcher import AdapterWatcher
from chatling.pipeline import Pipeline, PipelineStats
from chatling.safety import SafetyFilter
from chatling.store import Store

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


@dataclass(slots=True)
class LiveMode:
    """Live sources (Twitch, Discord, loopback audio) and the Twitch sink, plus what a
    live bot runs beside them: the adapter watcher, the nightly schedule, a status line."""

    settings: Settings
    use_twitch: bool
    use_discord: bool
    use_audio: bool
    run_for_s: float | None
    status_interval_s: float
    env_file: str | None
    schedule_trigger: Any
    adapter_poll_s: float
    kind: str = "live"
    speed: float = 1.0
    watcher: AdapterWatcher | None = None
    twitch: Any = None
    stream_start: float = field(default=0.0, init=False)
    """Wall time the stream row was opened (Twitch messages' offsets count from it)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Named counters for the status line (``discord answers``)."""

    @property
    def needs_whisper(self) -> bool:
        return self.use_audio

    @property
    def sources_up(self) -> tuple[str, ...]:
        s = self
        return ("twitch",) * s.use_twitch + ("discord",) * s.use_discord + ("audio",) * s.use_audio

    async def prepare(self, engine: VllmEngine) -> StreamRow:
        registry = AdapterRegistry(resolve_path(self.settings.schedule.adapters_dir))
        self.watcher = AdapterWatcher(registry, engine, self.adapter_poll_s)
        await self.watcher.sync()  # the pointer file, when there is one, wins over model.adapter
        self.stream_start = time.time()
        return StreamRow(
            f"live {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "twitch" if self.use_twitch else "live",
            self.settings.twitch.channel or None,
        )

    async def open_platform(
        self, stack: contextlib.AsyncExitStack, store: Store, stream_id: int, safety: SafetyFilter
    ) -> Platform:
        if not self.use_twitch:
            return Platform(LogSink(), "live")
        from chatling.platforms.twitch.client import TwitchChat
        from chatling.platforms.twitch.commands import MarkCommands

        settings = self.settings
        self.twitch = await stack.enter_async_context(
            TwitchChat(
                settings.twitch,
                None,
                stream_start=self.stream_start,
                token_file=resolve_path(settings.twitch.token_file),
                drop_backoff_s=settings.twitch.drop_backoff_s,
                store=store,
                stream_id=stream_id,
                marks=MarkCommands(settings.schedule.good_command, settings.schedule.bad_command),
                safety=safety,  # the channel's Twitch blocked terms join the filter
            )
        )
        return Platform(self.twitch.sink, self.twitch.channel)

    async def started(self, running: Running) -> None:
        schedule = self.settings.schedule
        if schedule.enabled:
            idle_s = schedule.live_idle_minutes * 60.0
            pipeline = running.pipeline

            def is_live() -> bool:
                last = pipeline.stats.last_activity
                return last is not None and time.monotonic() - last < idle_s

            await running.stack.enter_async_context(
                NightlyScheduler(
                    schedule, is_live, env_file=self.env_file, trigger=self.schedule_trigger
                )
            )
        if self.twitch is not None:
            self.twitch.attach(running.pipeline.inbox, control=running.pipeline)

    def background(self, running: Running) -> dict[str, Coroutine[Any, Any, None]]:
        assert self.watcher is not None
        return {
            "status": _report_status(running.pipeline, self.status_interval_s, self.extra),
            "adapter-watch": self.watcher.run(),
        }

    async def feed(self, running: Running) -> None:
        """Twitch feeds the inbox by itself once attached; these run until a signal."""
        try:
            async with asyncio.TaskGroup() as group:
                if self.use_discord:
                    group.create_task(_run_discord(running, self.extra), name="discord")
                if self.use_audio:
                    group.create_task(_run_audio(running), name="audio")
                if self.run_for_s is not None:
                    await asyncio.sleep(self.run_for_s)
                    raise _StopRun
                await asyncio.Future()  # until cancelled by a signal
        except* _StopRun:
            pass


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
    mode = LiveMode(
        settings,
        use_twitch,
        use_discord,
        use_audio,
        run_for_s,
        status_interval_s,
        env_file,
        schedule_trigger,
        adapter_poll_s,
    )
    out = await run_bot(
        settings,
        mode,
        display or Display(show_chat=True),
        engine=engine,
        whisper_model=whisper_model,
        shutdown_report_s=shutdown_report_s,
    )
    return LiveResult(out.stats, out.db_path, out.stream_id, mode.sources_up)


class _StopRun(Exception):
    """``run_for_s`` elapsed."""


async def _run_discord(running: Running, extra: dict[str, Any]) -> None:
    from chatling.platforms.discord_bot import DiscordBot
    from chatling.responder import ChatResponder

    settings, parts, pipeline = running.settings, running.parts, running.pipeline
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
        store=running.store,
        stream_id=parts.stream_id,
        good_reaction=settings.schedule.good_reaction,
        bad_reaction=settings.schedule.bad_reaction,
    )
    extra["discord answers"] = lambda: bot.answered
    await bot.run()  # raises if the connection dies for good (e.g. a revoked token)


async def _run_audio(running: Running) -> None:
    from chatling.sources.loopback import capture_loopback
    from chatling.transcribe import StreamingTranscriber, TranscriberOptions

    settings, clock = running.settings, running.clock
    options = TranscriberOptions.from_settings(settings.audio, hotwords=settings.reply.bot_name)
    transcriber = StreamingTranscriber(running.whisper_model, options, start_offset=clock.now())
    await capture_loopback(
        settings.audio.device,
        transcriber,
        running.pipeline.inbox,
        stream_clock=clock,
        chunk_s=settings.audio.chunk_s,
    )
