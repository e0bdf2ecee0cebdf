"""The reply loop: inbox -> context -> policy -> prompt -> engine -> filter -> limiter -> sink.

``Pipeline.run`` consumes the inbox (chat and speech from any source), keeps
the rolling context and the policy state, stores every event, and starts a
reply task when the policy says so: never two at once. Between events it
sleeps exactly until the policy's next ``wake_at`` (a cooldown's end, the
quiet deadline) or the next event, whichever comes first. The same loop
serves replays and live streams; only the sources, the clock and the sink
differ.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from chatling.context import RollingContext
from chatling.core.clock import StreamClock
from chatling.core.errors import EngineError
from chatling.core.events import ChatMessage, Reply, Utterance
from chatling.core.settings import ReplySettings
from chatling.display import Display
from chatling.engine import Generation, SamplingOptions
from chatling.policy import Decision, ReplyPolicy
from chatling.prompt import PromptBuilder, PromptParts
from chatling.ratelimit import RateLimiter
from chatling.reply import ReplyWriter
from chatling.safety import SafetyFilter
from chatling.sinks import ChatSink

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the pipeline needs of an engine (``VllmEngine`` in production)."""

    model_name: str

    def count_tokens(self, text: str) -> int: ...

    def render_chat(self, system: str, user: str) -> list[int]: ...

    def render(self, parts: PromptParts) -> list[int]: ...

    async def generate(self, prompt_ids: list[int], options: SamplingOptions) -> Generation: ...


class EventStore(Protocol):
    """What the pipeline needs of the store (``chatling.store.Store`` in production)."""

    @property
    def healthy(self) -> bool: ...

    def add_utterance(self, stream_id: int, utterance: Utterance) -> None: ...

    def add_chat(self, stream_id: int, message: ChatMessage) -> None: ...

    def add_reply(self, stream_id: int, reply: Reply) -> None: ...


class _Wake:
    """Inbox marker: a reply finished, decide again."""


class EndOfStream:
    """Inbox marker: the sources are done; finish the reply in flight and stop."""


InboxItem = ChatMessage | Utterance | _Wake | EndOfStream


@dataclass(slots=True)
class PipelineStats:
    """Counters and timings for the summary line and the benchmarks."""

    chat_in: int = 0
    utterances_in: int = 0
    posted: int = 0
    blocked: int = 0
    rate_limited: int = 0
    failed: int = 0
    store_unhealthy: int = 0
    latencies_s: list[float] = field(default_factory=list)
    first_token_s: list[float] = field(default_factory=list)
    speech_to_reply_s: list[float] = field(default_factory=list)
    """Stream time from the end of the newest utterance in the prompt to the reply ready."""
    seen_speech: list[tuple[float, float]] = field(default_factory=list)
    """(end of the newest utterance in the prompt, reply ready), both stream time."""
    transcription_lag_s: list[float] = field(default_factory=list)
    """Stream time from the end of an utterance to its arrival in the inbox."""
    preempted: int = 0
    """Replies dropped mid-generation because the streamer said something newer."""
    last_activity: float | None = None
    """``time.monotonic()`` of the last chat message or utterance (is the stream live?)."""


@dataclass(frozen=True, slots=True)
class PipelineParts:
    """Everything the reply loop talks to, built by the app."""

    settings: ReplySettings
    engine: Engine
    prompts: PromptBuilder
    safety: SafetyFilter
    limiter: RateLimiter
    store: EventStore
    stream_id: int
    sink: ChatSink
    display: Display
    clock: StreamClock
    channel: str = "replay"
    seed: int = 0
    known_bots: frozenset[str] = frozenset()
    """Logins (lower case) stored but never treated as viewers (Nightbot, ...)."""


class Pipeline:
    """Owns the context and policy state of one stream; run it as one task."""

    def __init__(self, parts: PipelineParts) -> None:
        self.parts = parts
        s = parts.settings
        self.context = RollingContext(s.transcript_window_s, s.max_chat_messages)
        self.policy = ReplyPolicy(s, rng_seed=parts.seed)
        self.state = self.policy.initial_state(parts.clock.now())
        self.recent_chat: deque[ChatMessage] = deque(maxlen=2000)
        self.stats = PipelineStats()
        self.writer = ReplyWriter(s, parts.engine, parts.prompts, parts.safety)
        self.inbox: asyncio.Queue[InboxItem] = asyncio.Queue(maxsize=10_000)
        self._reply_task: asyncio.Task[None] | None = None
        self._reply_trigger: str | None = None
        self._in_engine = False
        """The reply task is awaiting the engine (the only point where it may be pre-empted)."""
        self._preempting = False
        self._preempted_in_a_row = 0
        self._replies = 0
        self.paused = False
        """Paused by a moderator: everything is still logged, nothing is posted."""
        self._say_now = False
        """The dashboard asked for a reply now (``say_now``), whatever the policy says."""

    # -- moderator control (``chatling.control.BotControl``) -------------------------

    def pause(self) -> None:
        self.paused = True
        log.info("replies paused by a moderator (still logging)")

    def resume(self) -> None:
        self.paused = False
        self.inbox.put_nowait(_Wake())
        log.info("replies resumed")

    def say_now(self) -> bool:
        """Reply at the loop's next turn, policy or not (the dashboard's "say something now").

        Refused (False) while paused or while a reply is generating; the rate
        limiter and the filter still apply to what comes out."""
        if self.paused or (self._reply_task is not None and not self._reply_task.done()):
            return False
        self._say_now = True
        self.inbox.put_nowait(_Wake())
        return True

    def status_line(self) -> str:
        st = self.stats
        state = "paused" if self.paused else "active"
        return (
            f"chatling is {state}: {st.chat_in} chat messages, {st.posted} replies posted, "
            f"{st.blocked} blocked, {st.rate_limited} rate-limited"
        )

    async def run(self) -> PipelineStats:
        """Consume the inbox until ``EndOfStream``; the reply in flight is awaited."""
        clock = self.parts.clock
        wake_at: float | None = None
        try:
            while True:
                timeout = (
                    None if wake_at is None else max(0.0, (wake_at - clock.now()) / clock.speed)
                )
                try:
                    item = await asyncio.wait_for(self.inbox.get(), timeout)
                except TimeoutError:
                    item = None
                if isinstance(item, EndOfStream):
                    break
                if item is not None and not isinstance(item, _Wake):
                    self._accept(item)
                wake_at = self._maybe_reply()
            if self._reply_task is not None:
                await self._reply_task
        finally:
            if self._reply_task is not None and not self._reply_task.done():
                self._reply_task.cancel()
        return self.stats

    def _accept(self, item: ChatMessage | Utterance) -> None:
        p = self.parts
        self.stats.last_activity = time.monotonic()
        if isinstance(item, Utterance):
            self.stats.utterances_in += 1
            self.stats.transcription_lag_s.append(max(0.0, p.clock.now() - item.end))
            self.context.add_utterance(item)
            p.store.add_utterance(p.stream_id, item)
            p.display.utterance(item)
            self._maybe_preempt()
            return
        self.stats.chat_in += 1
        if not item.is_bot and item.user.casefold() in p.known_bots:
            item = dataclasses.replace(item, is_bot=True)
        self.context.add_chat(item)
        self.recent_chat.append(item)
        self.state = self.state.with_chat(item)
        p.store.add_chat(p.stream_id, item)
        p.display.chat(item)

    def _maybe_preempt(self) -> None:
        """Drop a reply still generating from older speech, so the next one hears this.

        Only replies nobody asked for (burst, quiet) and only while the engine
        works: nothing filtered, logged or posted is ever undone. At most one
        pre-emption in a row, so continuous speech cannot starve the bot.
        """
        task = self._reply_task
        if (
            task is None
            or task.done()
            or not self._in_engine
            or self._reply_trigger == "addressed"
            or self._preempted_in_a_row >= 1
        ):
            return
        log.debug("pre-empting the reply in flight: newer speech arrived")
        self._preempting = True
        task.cancel()

    def _maybe_reply(self) -> float | None:
        if self.paused:
            return None
        now = self.parts.clock.now()
        decision = self.policy.decide(self.state, now)
        if self._say_now:
            self._say_now = False
            if not decision.speak and not self.state.generating:
                decision = Decision(True, "quiet", None, "say now (dashboard)")
        if not decision.speak:
            return decision.wake_at
        log.debug("replying at %.1f: %s", now, decision.reason)
        self.state = self.state.started(now, decision.target)
        self._reply_trigger = decision.trigger
        self._reply_task = asyncio.create_task(self._reply(decision, now), name="reply")
        return None

    async def _reply(self, decision: Decision, now: float) -> None:
        posted_to: ChatMessage | None = None
        preempted = False
        try:
            reply = await self._generate_reply(decision, now)
            if reply.status == "posted":
                posted_to = decision.target
            self.parts.store.add_reply(self.parts.stream_id, reply)
            self.parts.display.reply(reply)
        except asyncio.CancelledError:
            if not self._preempting:
                raise
            preempted = True  # nothing was generated, so nothing to log
            self.stats.preempted += 1
        finally:
            if preempted:
                self.state = self.state.abandoned()
                self._preempted_in_a_row += 1
            else:
                self.state = self.state.finished(self.parts.clock.now(), answered=posted_to)
                self._preempted_in_a_row = 0
            self._preempting = self._in_engine = False
            self.inbox.put_nowait(_Wake())

    def _recent_for_filter(self, now: float) -> list[ChatMessage]:
        horizon = now - self.parts.settings.duplicate_window_s
        return [m for m in self.recent_chat if m.offset >= horizon]

    async def _generate_reply(self, decision: Decision, now: float) -> Reply:
        p = self.parts
        target = decision.target
        started = time.perf_counter()
        snapshot = self.context.snapshot(now)
        prompt = self.writer.prompt(snapshot, target)
        reply = Reply(
            offset=now,
            trigger=decision.trigger or "quiet",
            prompt=prompt.user,
            in_reply_to=target.message_id if target else None,
            reply_to_user=target.user if target else None,
            model=p.engine.model_name,
        )
        self._replies += 1
        self._in_engine = True
        try:
            generation = await self.writer.generate(prompt, p.seed * 1_000_003 + self._replies)
        except EngineError as exc:
            # The engine process died or refused the request: drop this reply, go on.
            log.error("generation failed, reply dropped: %s", exc)
            reply.status = "failed"
            self.stats.failed += 1
            return reply
        finally:
            self._in_engine = False
        reply.adapter = generation.adapter
        reply.first_token_s = generation.first_token_s
        ready = p.clock.now()
        judged = self.writer.judge(
            generation, prompt, now=ready, target=target, recent_chat=self._recent_for_filter(ready)
        )
        reply.candidates.extend(judged.candidates)
        reply.latency_s = time.perf_counter() - started
        self.stats.latencies_s.append(reply.latency_s)
        self.stats.first_token_s.append(generation.first_token_s)
        if prompt.snapshot.utterances:
            newest_end = prompt.snapshot.utterances[-1].end
            self.stats.speech_to_reply_s.append(ready - newest_end)
            self.stats.seen_speech.append((newest_end, ready))
        best = judged.chosen
        if best is None:
            reply.status = "blocked"
            self.stats.blocked += 1
            return reply
        reply.chosen = best.text
        if not p.store.healthy:
            # Never post what cannot be logged: the log is the record of what the bot said.
            reply.status = "failed"
            self.stats.store_unhealthy += 1
            return reply
        if not p.limiter.try_acquire(p.channel, ready):
            reply.status = "rate_limited"
            self.stats.rate_limited += 1
            return reply
        if await p.sink.send(best.text, target):
            reply.status = "posted"
            self.stats.posted += 1
            # The bot's own line joins the duplicate check at once: Twitch echoes it back
            # as chat later, a replay or a log sink never does, and the bot must not repeat
            # itself there either.
            own = ChatMessage(offset=ready, user=p.settings.bot_name, text=best.text, is_bot=True)
            self.recent_chat.append(own)
        else:
            reply.status = "failed"
            self.stats.failed += 1
        return reply
