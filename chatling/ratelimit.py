"""Chat rate limiting that can never exceed the platform's limit.

Twitch counts messages per 30 s *sliding* window and locks an account that
goes over for 30 minutes. A classic refilling token bucket that starts full
can grant ``capacity`` messages at once and then the refill within the same
window, i.e. more than ``capacity`` per window. ``TokenBucket`` therefore keeps
a sliding log of its last ``capacity`` grant times and grants a message only
when fewer than ``capacity`` were granted in the ``window_s`` before it: in
every half-open interval ``[t, t + window_s)`` at most ``capacity`` messages
are granted, whatever the request pattern. Memory is ``capacity`` floats.

Everything is a pure function of the times passed in (no clock reads). A
clock that steps back is treated as not having moved, which only delays.
"""

from __future__ import annotations

from collections import deque

from chatling.core.errors import ConfigError
from chatling.core.settings import ReplySettings


class TokenBucket:
    """At most ``capacity`` grants in any sliding window of ``window_s`` seconds."""

    def __init__(self, capacity: int, window_s: float) -> None:
        if capacity < 1:
            raise ConfigError(
                f"rate limit capacity must be at least 1 message, got {capacity}: "
                "fix CHATLING_REPLY__RATE_MESSAGES / CHATLING_REPLY__MODERATOR_RATE_MESSAGES"
            )
        if window_s <= 0:
            raise ConfigError(
                f"rate limit window must be above 0 s, got {window_s}: "
                "fix CHATLING_REPLY__RATE_WINDOW_S"
            )
        self.capacity = int(capacity)
        self.window_s = float(window_s)
        self._grants: deque[float] = deque(maxlen=self.capacity)
        self._latest = float("-inf")

    def _clock(self, now: float) -> float:
        self._latest = max(self._latest, now)
        return self._latest

    def time_until_available(self, now: float) -> float:
        """Seconds from ``now`` until ``try_acquire`` would succeed (0 if it would now)."""
        if len(self._grants) < self.capacity:
            return 0.0
        # The oldest of the last ``capacity`` grants must leave the window.
        free_at = self._grants[0] + self.window_s
        if self._latest >= free_at:
            return 0.0
        return max(0.0, free_at - now)

    def try_acquire(self, now: float) -> bool:
        """Grant one message at ``now`` if the sliding window allows it."""
        t = self._clock(now)
        if len(self._grants) == self.capacity and t < self._grants[0] + self.window_s:
            return False
        self._grants.append(t)  # maxlen drops the grant that just left the window
        return True

    def granted_in_window(self, now: float) -> int:
        """How many grants fall in the window ending at ``now``."""
        return sum(1 for g in self._grants if now - self.window_s < g <= now)


class RateLimiter:
    """One ``TokenBucket`` per channel, created on first use."""

    def __init__(self, capacity: int, window_s: float) -> None:
        TokenBucket(capacity, window_s)  # validate once, up front
        self.capacity = capacity
        self.window_s = window_s
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, channel: str) -> TokenBucket:
        """The bucket of ``channel`` (channel names are case-insensitive)."""
        key = channel.casefold()
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(self.capacity, self.window_s)
        return self._buckets[key]

    def try_acquire(self, channel: str, now: float) -> bool:
        """Grant one message in ``channel`` at ``now`` if its window allows it."""
        return self.bucket(channel).try_acquire(now)

    def time_until_available(self, channel: str, now: float) -> float:
        """Seconds until a message in ``channel`` would be granted."""
        return self.bucket(channel).time_until_available(now)


def for_role(is_moderator: bool, settings: ReplySettings) -> RateLimiter:
    """The limiter for the bot's role: moderators may send more."""
    capacity = settings.moderator_rate_messages if is_moderator else settings.rate_messages
    return RateLimiter(capacity, settings.rate_window_s)
