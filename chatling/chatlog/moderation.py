"""Moderation actions found in chat logs, and the pure rule that drops moderated messages.

Archives of raw Twitch IRC (justlog, rustlog) keep what moderators did:
``CLEARCHAT`` (a timeout, a ban, or the whole chat cleared) and ``CLEARMSG``
(one message deleted). Training must not learn from messages chat never
got to keep, so readers return these actions beside the messages (in
``ChatLog.moderation``, same clock as the messages) and training calls
``drop_moderated``:

    log = read_chat_log_full("channel.log", stream_start=1700000000)
    messages = drop_moderated(log.messages, log.moderation)

Twitch clients remove every message of a timed-out or banned user that is
still on screen, so by default all of that user's messages up to the action
are dropped (``lookback`` limits that to the last N seconds). A deleted
message is dropped by id. A whole-chat clear drops nothing unless asked
(``drop_cleared_chat``): streamers clear chat for many harmless reasons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from chatling.core.events import ChatMessage

Action = Literal["timeout", "ban", "delete", "clear"]


@dataclass(frozen=True, slots=True)
class ModerationEvent:
    """One moderator action from the log."""

    offset: float
    """When it happened, on the same clock as the log's messages."""
    action: Action
    """``timeout``, ``ban`` (CLEARCHAT with a user), ``delete`` (CLEARMSG), ``clear`` (all chat)."""
    user: str | None = None
    """Login of the user acted on (None for ``clear``; may be None for ``delete``)."""
    message_id: str | None = None
    """The deleted message (``delete`` only)."""
    duration: float | None = None
    """Timeout length in seconds (``timeout`` only)."""


def drop_moderated(
    messages: Sequence[ChatMessage],
    moderation: Iterable[ModerationEvent],
    *,
    lookback: float | None = None,
    drop_cleared_chat: bool = False,
) -> list[ChatMessage]:
    """``messages`` without those a moderator removed (order kept).

    - ``delete``: the message with that id.
    - ``timeout`` / ``ban``: the user's messages at or before the action (within
      ``lookback`` seconds of it when given). Messages after a timeout ends are kept.
    - ``clear``: every message at or before it, only when ``drop_cleared_chat``.
    """
    deleted: set[str] = set()
    removals: dict[str, list[float]] = defaultdict(list)  # user -> action offsets
    clear_until: float | None = None
    for event in moderation:
        if event.action == "delete" and event.message_id:
            deleted.add(event.message_id)
        elif event.action in ("timeout", "ban") and event.user:
            removals[event.user.lower()].append(event.offset)
        elif event.action == "clear" and drop_cleared_chat:
            clear_until = event.offset if clear_until is None else max(clear_until, event.offset)
    for offsets in removals.values():
        offsets.sort()

    def removed(message: ChatMessage) -> bool:
        if message.message_id is not None and message.message_id in deleted:
            return True
        if clear_until is not None and message.offset <= clear_until:
            return True
        for at in removals.get(message.user, ()):
            if at >= message.offset and (lookback is None or at - message.offset <= lookback):
                return True
        return False

    return [m for m in messages if not removed(m)]
