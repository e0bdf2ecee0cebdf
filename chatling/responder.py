"""Answers one person's direct question (Discord ``/chat``) from the live bot's engine.

``ChatResponder`` is a plain service, with no platform code in it: a Discord
command (``chatling.platforms.discord_bot``) or any other front end calls ``answer(user,
text)``. It renders the same persona and templates as the reply loop, showing
the stream's current context when one is running (a callable returning a
``ContextSnapshot``) with the user's text as the addressed message, quoted as
data. It asks the engine for several candidates in one request, runs each
through the safety filter, lets the scorer pick one, and logs the exchange to
the store as a ``Reply`` with trigger ``discord``. When every candidate is
blocked the user gets a polite fallback instead of silence, and nothing
generated is shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from chatling.context import ContextSnapshot
from chatling.core.errors import EngineError
from chatling.core.events import Candidate, ChatMessage, Reply
from chatling.core.settings import ReplySettings
from chatling.pipeline import Engine, EventStore
from chatling.prompt import PromptBuilder
from chatling.reply import ReplyWriter
from chatling.safety import SafetyFilter

log = logging.getLogger(__name__)

TRIGGER = "discord"
"""``bot_replies.trigger`` of the exchanges answered here."""
FALLBACK_TEXT = "Sorry, I don't have a good answer to that one. Could you ask another way?"
"""Shown when every candidate was blocked by the safety filter."""
UNLOGGED_TEXT = "Sorry, I can't answer right now: my log is not being written. Try again soon."
"""Shown when the store is unhealthy: never say what cannot be logged (as the reply loop)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send back to the person who asked, and how it was reached."""

    text: str
    """The message to send: the chosen candidate, or a fallback."""
    generated: bool
    """True when ``text`` is a generated candidate that passed the filter."""
    status: str
    """As logged: ``posted``, ``blocked`` (all candidates blocked) or ``failed``."""
    candidates: tuple[Candidate, ...] = ()
    latency_s: float = 0.0


class _Elapsed:
    """Seconds since this responder was made: the offset used when no stream runs."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._t0


class ChatResponder:
    """Builds a prompt, generates, filters, scores and logs one direct answer."""

    def __init__(
        self,
        settings: ReplySettings,
        engine: Engine,
        prompts: PromptBuilder,
        safety: SafetyFilter,
        store: EventStore,
        stream_id: int,
        *,
        context: Callable[[], ContextSnapshot] | None = None,
        clock: Callable[[], float] | None = None,
        seed: int = 0,
    ) -> None:
        """``context`` gives the running stream's snapshot (its ``now`` is the offset
        the exchange is logged at); without it the prompt shows no stream, and
        ``clock`` (default: seconds since this responder was made) gives the offset."""
        self._settings = settings
        self._engine = engine
        self._prompts = prompts
        self._safety = safety
        self._store = store
        self._stream_id = stream_id
        self._context = context
        self._clock = clock or _Elapsed()
        self._seed = seed
        self._count = 0
        self._writer = ReplyWriter(settings, engine, prompts, safety)

    def _snapshot(self) -> ContextSnapshot:
        if self._context is not None:
            return self._context()
        return ContextSnapshot(now=self._clock())

    async def answer(
        self,
        user: str,
        text: str,
        *,
        display_name: str | None = None,
        message_id: str | None = None,
    ) -> Answer:
        """Answer ``text`` from ``user``; raises ``EngineError`` (logged as failed)."""
        started = time.perf_counter()
        snapshot = self._snapshot()
        asked = ChatMessage(
            offset=snapshot.now,
            user=user,
            text=text,
            display_name=display_name,
            message_id=message_id,
            source=TRIGGER,
        )
        prompt = self._writer.prompt(snapshot, asked)
        reply = Reply(
            offset=snapshot.now,
            trigger=TRIGGER,
            prompt=prompt.user,
            in_reply_to=message_id,
            reply_to_user=user,
            model=self._engine.model_name,
        )
        self._count += 1
        try:
            generation = await self._writer.generate(prompt, self._seed * 1_000_003 + self._count)
        except EngineError:
            reply.status = "failed"
            reply.latency_s = time.perf_counter() - started
            self._store.add_reply(self._stream_id, reply)
            raise
        reply.adapter = generation.adapter
        reply.first_token_s = generation.first_token_s
        judged = self._writer.judge(
            generation, prompt, now=snapshot.now, target=asked, recent_chat=snapshot.chat
        )
        reply.candidates.extend(judged.candidates)
        reply.latency_s = time.perf_counter() - started
        if judged.chosen is None:
            reply.status = "blocked"
            shown, generated = FALLBACK_TEXT, False
            log.info(
                "/chat from %s: all %d candidates blocked (%s)",
                user,
                len(reply.candidates),
                ", ".join(sorted({c.reason for c in reply.candidates})),
            )
        elif not self._store.healthy:
            reply.status = "failed"
            shown, generated = UNLOGGED_TEXT, False
            log.error("/chat from %s not answered: the store is not writing", user)
        else:
            reply.chosen = judged.chosen.text
            reply.status = "posted"
            shown, generated = reply.chosen, True
        self._store.add_reply(self._stream_id, reply)
        return Answer(shown, generated, reply.status, tuple(reply.candidates), reply.latency_s)


__all__ = ["FALLBACK_TEXT", "TRIGGER", "UNLOGGED_TEXT", "Answer", "ChatResponder"]
