"""Typed events that flow through the pipeline.

Sources (replay, Twitch, Discord, loopback audio) produce ``ChatMessage`` and
``Utterance`` values; the reply loop produces ``Reply`` values. All offsets are
seconds from the start of the stream (the VOD offset), so live logs and
replayed VODs line up the same way for training.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat message, whatever platform or log file it came from."""

    offset: float
    """Seconds since the stream started."""
    user: str
    """Login name (lower case where the source gives one)."""
    text: str
    display_name: str | None = None
    message_id: str | None = None
    emotes: tuple[str, ...] = ()
    """Emote names that appear in ``text``, kept as text tokens."""
    is_bot: bool = False
    """Sent by this bot or a known bot account: stored, never a reply trigger."""
    source: str = "replay"
    """Where it came from: ``replay``, ``twitch``, ``discord``."""
    badges: tuple[str, ...] = ()
    """Chat badges by set id (``broadcaster``, ``moderator``, ``vip``, ``subscriber``)."""
    parent_message_id: str | None = None
    """The message this one replies to (Twitch reply threads), if any."""
    parent_text: str | None = None
    """The text of the message replied to (Twitch sends it with the reply)."""
    parent_user: str | None = None
    """Login of the author of the message replied to."""

    @property
    def is_moderator(self) -> bool:
        """Broadcaster or moderator: may run the bot's chat commands."""
        return "broadcaster" in self.badges or "moderator" in self.badges


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of the streamer's speech, committed by the transcriber."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """One generated reply candidate with its filter verdict and score."""

    text: str
    allowed: bool
    reason: str
    """Why the filter allowed or blocked it (``ok`` when allowed)."""
    score: float = 0.0


@dataclass(slots=True)
class Reply:
    """One reply attempt: what triggered it, what was generated, what happened."""

    offset: float
    trigger: str
    """Why the bot spoke: ``addressed``, ``burst``, ``quiet`` (the reply policy) or
    ``discord`` (a ``/chat`` command, ``chatling/responder.py``)."""
    prompt: str
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None
    status: str = "pending"
    """``posted``, ``blocked`` (no candidate passed) or ``rate_limited``."""
    in_reply_to: str | None = None
    """``message_id`` of the chat message answered, when addressed."""
    reply_to_user: str | None = None
    latency_s: float = 0.0
    first_token_s: float = 0.0
    model: str = ""
    adapter: str | None = None
