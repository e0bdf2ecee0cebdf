"""What moderators' chat commands can do to a running bot (``!chatling pause``...).

The pipeline implements this; platform adapters (Twitch chat commands) call it,
so they never reach into the pipeline's state.
"""

from __future__ import annotations

from typing import Protocol


class BotControl(Protocol):
    def pause(self) -> None:
        """Stop posting replies; keep logging everything."""

    def resume(self) -> None:
        """Post replies again."""

    def status_line(self) -> str:
        """One line for chat: active or paused, and counts."""
