"""Where posted replies go: the terminal in replay mode, a platform when live.

A sink only delivers; deciding, filtering and rate limiting happen before it.
``send`` returns whether the platform accepted the message, so a refusal
(Twitch's ``is_sent: false``) is recorded, not assumed away.
"""

from __future__ import annotations

from typing import Protocol

from chatling.core.events import ChatMessage


class ChatSink(Protocol):
    """Delivers one chat message, optionally as a reply to another."""

    async def send(self, text: str, reply_to: ChatMessage | None) -> bool: ...


class TerminalSink:
    """Replay mode: the display already shows the reply, so delivery always succeeds."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    async def send(self, text: str, reply_to: ChatMessage | None) -> bool:
        self.sent.append((text, reply_to.message_id if reply_to else None))
        return True
