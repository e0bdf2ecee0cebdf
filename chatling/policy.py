"""The reply policy: should the bot speak now, and to whom?

``ReplyPolicy.decide(state, now)`` is a pure function of a frozen
``PolicyState`` and the time: it never reads a clock, draws nothing at random
and does no I/O, so the same state and time always give the same decision and
every rule is unit-tested without waiting. The bot speaks when

- **addressed**: a viewer wrote the bot's name as a word (or ``@name``); the
  newest such message not yet answered is the target, unless its author got
  an addressed reply less than ``user_cooldown_s`` ago;
- **burst**: at least ``burst_messages`` viewer messages arrived within
  ``burst_window_s`` (counting only messages after the last reply began);
- **quiet**: the bot has said nothing for ``quiet_interval_s`` plus a jitter
  in ``[-quiet_jitter_s, +quiet_jitter_s]``. The jitter of the n-th interval
  is derived from the seed and n, so it is fixed when a reply is posted and
  ``decide`` stays pure.

It never speaks while a reply is generating or within ``global_cooldown_s``
after the last one. Bot messages never count. State changes are pure too:
``state.with_chat(msg)``, ``state.started(now, target)``,
``state.finished(now, answered)`` each return a new state, bounded in size.
"""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.core.settings import ReplySettings

Trigger = Literal["addressed", "burst", "quiet"]

MAX_PENDING = 16
"""Unanswered addressing messages kept at most (the newest win)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy decided at one moment."""

    speak: bool
    trigger: Trigger | None
    target: ChatMessage | None
    """The message to answer (addressed replies only)."""
    reason: str
    """Short and loggable: ``addressed:<user>``, ``burst:9/8``, ``quiet``,
    ``generating``, ``global_cooldown``, ``user_cooldown``, ``waiting``."""
    wake_at: float | None = None
    """When not speaking: the earliest time the answer may change without a
    new event (cooldown end, quiet deadline); ``None`` when only an event
    (a message, the end of generation) can change it."""


@dataclass(frozen=True, slots=True)
class _Limits:
    """The parts of the settings the state transitions need."""

    bot_name: str
    address: re.Pattern[str]
    burst_window_s: float
    max_recent: int
    addressed_max_age_s: float
    user_cooldown_s: float


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything ``decide`` looks at; make the first with ``initial_state``."""

    limits: _Limits = field(repr=False)
    quiet_since: float
    """When the bot last finished a reply (or the policy started)."""
    recent: tuple[float, ...] = ()
    """Offsets of recent viewer messages, sorted, within the burst window."""
    pending: tuple[ChatMessage, ...] = ()
    """Messages addressing the bot, not yet answered, oldest first."""
    generating: bool = False
    last_started: float = float("-inf")
    last_finished: float | None = None
    replies: int = 0
    """Finished reply attempts: picks the jitter of the next quiet interval."""
    user_replied: tuple[tuple[str, float], ...] = ()
    """(user, time) of addressed replies still within the user cooldown."""

    def is_bot_message(self, message: ChatMessage) -> bool:
        """Bot messages (and the bot's own login) are never triggers."""
        return message.is_bot or message.user.casefold() == self.limits.bot_name

    def addresses_bot(self, message: ChatMessage) -> bool:
        """Whether a viewer message names the bot as a word or ``@name``."""
        return not self.is_bot_message(message) and bool(self.limits.address.search(message.text))

    def with_chat(self, message: ChatMessage) -> PolicyState:
        """The state after a chat message arrived."""
        if self.is_bot_message(message):
            return self
        lim = self.limits
        recent = list(self.recent)
        bisect.insort(recent, message.offset)
        newest = recent[-1]
        recent = [t for t in recent if t > newest - lim.burst_window_s][-lim.max_recent :]
        pending = self.pending
        if self.addresses_bot(message):
            cutoff = max(m.offset for m in (*self.pending, message)) - lim.addressed_max_age_s
            kept = [m for m in self.pending if m.offset >= cutoff] + [message]
            kept.sort(key=lambda m: m.offset)
            pending = tuple(kept[-MAX_PENDING:])
        return replace(self, recent=tuple(recent), pending=pending)

    def started(self, now: float, target: ChatMessage | None = None) -> PolicyState:
        """The state once a reply began generating (to ``target`` if addressed).

        The target, and older pending messages of the same user, count as
        answered from here on, whatever the filter later says: the bot does
        not retry a message it already tried.
        """
        pending = self.pending
        if target is not None:
            user = target.user.casefold()
            pending = tuple(
                m
                for m in pending
                if m != target and not (m.user.casefold() == user and m.offset <= target.offset)
            )
        return replace(self, generating=True, last_started=now, pending=pending)

    def abandoned(self) -> PolicyState:
        """The state once a reply was dropped before anything was generated or posted
        (pre-empted by fresher speech): no cooldown starts, so the next one may go at once."""
        return replace(self, generating=False)

    def finished(self, now: float, answered: ChatMessage | None = None) -> PolicyState:
        """The state once a reply attempt ended (posted or not).

        ``answered`` is the message an addressed reply was posted to; its
        author enters the per-user cooldown. Every attempt starts the global
        cooldown and a new quiet interval.
        """
        keep_after = now - self.limits.user_cooldown_s
        replied = [(u, t) for u, t in self.user_replied if t > keep_after]
        if answered is not None:
            user = answered.user.casefold()
            replied = [(u, t) for u, t in replied if u != user] + [(user, now)]
        return replace(
            self,
            generating=False,
            last_finished=now,
            quiet_since=now,
            replies=self.replies + 1,
            user_replied=tuple(replied),
        )


def address_pattern(bot_name: str) -> re.Pattern[str]:
    """A regex finding ``bot_name`` as a whole word, with or without ``@``."""
    return re.compile(rf"(?<![\w@])@?{re.escape(bot_name)}(?!\w)", re.IGNORECASE)


def quiet_jitter(seed: int, n: int, jitter_s: float) -> float:
    """The jitter of the quiet interval after the n-th reply: fixed by (seed, n)."""
    if jitter_s <= 0:
        return 0.0
    return random.Random(f"chatling-quiet/{seed}/{n}").uniform(-jitter_s, jitter_s)


class ReplyPolicy:
    """Decides when to reply, from ``ReplySettings`` and a seed."""

    def __init__(
        self,
        settings: ReplySettings,
        rng_seed: int = 0,
        *,
        addressed_max_age_s: float = 60.0,
    ) -> None:
        if not settings.bot_name.strip():
            raise ConfigError("bot_name is empty: set CHATLING_REPLY__BOT_NAME")
        if settings.burst_messages < 1 or settings.burst_window_s <= 0:
            raise ConfigError(
                "burst_messages must be at least 1 and burst_window_s above 0: "
                "fix CHATLING_REPLY__BURST_MESSAGES / CHATLING_REPLY__BURST_WINDOW_S"
            )
        self.settings = settings
        self.rng_seed = rng_seed
        name = settings.bot_name.strip().lstrip("@")
        self._limits = _Limits(
            bot_name=name.casefold(),
            address=address_pattern(name),
            burst_window_s=settings.burst_window_s,
            max_recent=max(2 * settings.burst_messages, 16),
            addressed_max_age_s=addressed_max_age_s,
            user_cooldown_s=settings.user_cooldown_s,
        )

    def initial_state(self, now: float) -> PolicyState:
        """A fresh state; the first quiet interval counts from ``now``."""
        return PolicyState(limits=self._limits, quiet_since=now)

    def quiet_deadline(self, state: PolicyState) -> float:
        """When the quiet trigger fires if nothing else happens."""
        s = self.settings
        interval = s.quiet_interval_s + quiet_jitter(self.rng_seed, state.replies, s.quiet_jitter_s)
        return state.quiet_since + max(interval, 0.0)

    def decide(self, state: PolicyState, now: float) -> Decision:
        """Speak now or not, why, and to whom."""
        s = self.settings
        if state.generating:
            return Decision(False, None, None, "generating")
        if state.last_finished is not None and now < state.last_finished + s.global_cooldown_s:
            return Decision(
                False, None, None, "global_cooldown", state.last_finished + s.global_cooldown_s
            )

        cooling = {
            u: t + s.user_cooldown_s for u, t in state.user_replied if t + s.user_cooldown_s > now
        }
        oldest_ok = now - self._limits.addressed_max_age_s
        waiting_users: list[float] = []
        for message in reversed(state.pending):
            if message.offset > now or message.offset < oldest_ok:
                continue
            until = cooling.get(message.user.casefold())
            if until is None:
                return Decision(True, "addressed", message, f"addressed:{message.user}")
            if until <= message.offset + self._limits.addressed_max_age_s:
                waiting_users.append(until)

        start = max(now - s.burst_window_s, state.last_started)
        count = sum(1 for t in state.recent if start < t <= now)
        if count >= s.burst_messages:
            return Decision(True, "burst", None, f"burst:{count}/{s.burst_messages}")

        deadline = self.quiet_deadline(state)
        if now >= deadline:
            return Decision(True, "quiet", None, f"quiet:{now - state.quiet_since:.1f}s")
        reason = "user_cooldown" if waiting_users else "waiting"
        return Decision(False, None, None, reason, min([deadline, *waiting_users]))
