"""Stream time for replays: seconds since the stream started, at any speed.

A replay at ``speed`` N maps the event loop's monotonic clock onto stream
offsets, so a 3-minute demo can run in real time for a person watching or in
seconds for a test, with every component seeing the same ``now``.
"""

from __future__ import annotations

import asyncio
import time


class StreamClock:
    """Stream offset = (monotonic time since start) * speed + start offset."""

    def __init__(self, speed: float = 1.0, start_offset: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start_offset = start_offset
        self._t0 = time.monotonic()

    def now(self) -> float:
        """The current stream offset in seconds."""
        return self._start_offset + (time.monotonic() - self._t0) * self.speed

    async def sleep_until(self, offset: float) -> None:
        """Wait until the stream reaches ``offset`` (returns at once if it has)."""
        delay = (offset - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
