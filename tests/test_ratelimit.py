"""Tests of the chat rate limiter (chatling/ratelimit.py): never over the limit."""

from __future__ import annotations

import bisect
import random

import pytest

from chatling.core.errors import ConfigError
from chatling.core.settings import ReplySettings
from chatling.ratelimit import RateLimiter, TokenBucket, for_role


def max_in_any_window(grants: list[float], window_s: float) -> int:
    """The most grants in any half-open interval [t, t + window_s).

    The busiest interval can always be moved to start at a grant, so checking
    windows that start at each grant covers every sliding window.
    """
    grants = sorted(grants)
    return max(
        (bisect.bisect_left(grants, g + window_s) - i for i, g in enumerate(grants)), default=0
    )


def test_window_counter_is_right() -> None:
    assert max_in_any_window([0, 1, 2, 30, 31], 30) == 3
    assert max_in_any_window([0, 29.99, 30], 30) == 2
    assert max_in_any_window([], 30) == 0


def random_gap(rng: random.Random, window: float) -> float:
    """Bursts of simultaneous requests, dense demand, and idle gaps (some
    exactly one window long) that let a refilling bucket fill up."""
    r = rng.random()
    if r < 0.3:
        return 0.0
    if r < 0.85:
        return rng.uniform(0, 0.05 * window)
    if r < 0.95:
        return rng.uniform(0, 0.5 * window)
    return rng.choice([window, window - 1e-9, 2 * window])


def grants_for(bucket, window: float, seed: int, n: int = 10_000) -> list[float]:
    rng = random.Random(seed)
    t = 0.0
    grants: list[float] = []
    for _ in range(n):
        t += random_gap(rng, window)
        if bucket.try_acquire(t):
            grants.append(t)
    return grants


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("capacity,window", [(20, 30.0), (12, 30.0), (5, 7.0), (1, 1.5)])
def test_no_sliding_window_ever_exceeds_capacity(seed: int, capacity: int, window: float) -> None:
    grants = grants_for(TokenBucket(capacity, window), window, seed)
    # Demand is high enough to fill windows, and never more than capacity fits one.
    assert max_in_any_window(grants, window) == capacity


class NaiveRefillBucket:
    """The design this module avoids: starts full, refills capacity/window per second."""

    def __init__(self, capacity: int, window_s: float) -> None:
        self.capacity, self.rate = capacity, capacity / window_s
        self.tokens, self.last = float(capacity), 0.0

    def try_acquire(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def test_the_property_check_catches_a_naive_bucket() -> None:
    grants = grants_for(NaiveRefillBucket(20, 30.0), 30.0, seed=0)
    assert max_in_any_window(grants, 30.0) > 20


def test_steady_demand_reaches_capacity_per_window() -> None:
    bucket = TokenBucket(20, 30.0)
    grants = []
    t = 0.0
    while t < 300.0:
        if bucket.try_acquire(t):
            grants.append(t)
        t = round(t + 0.1, 6)
    # Ten full windows: exactly capacity in each, nothing wasted.
    assert len(grants) == 20 * 10
    for k in range(10):
        assert sum(1 for g in grants if 30 * k <= g < 30 * (k + 1)) == 20


def test_no_refill_surprise_after_a_full_burst() -> None:
    """A naive bucket starting full would grant the refill within the same window."""
    bucket = TokenBucket(20, 30.0)
    assert all(bucket.try_acquire(0.0) for _ in range(20))
    assert not bucket.try_acquire(15.0)
    assert not bucket.try_acquire(29.999)
    assert bucket.granted_in_window(29.999) == 20
    assert bucket.try_acquire(30.0)


def test_time_until_available_is_exact() -> None:
    bucket = TokenBucket(3, 10.0)
    assert bucket.time_until_available(0.0) == 0.0
    for t in (0.0, 2.0, 4.0):
        assert bucket.try_acquire(t)
    assert bucket.time_until_available(5.0) == pytest.approx(5.0)
    assert not bucket.try_acquire(9.999)
    assert bucket.time_until_available(10.0) == 0.0
    assert bucket.try_acquire(10.0)
    assert bucket.time_until_available(10.0) == pytest.approx(2.0)  # the grant at 2 must leave


def test_waiting_the_announced_time_always_succeeds() -> None:
    rng = random.Random(5)
    bucket = TokenBucket(5, 30.0)
    t = 0.0
    for _ in range(500):
        t += rng.uniform(0, 3)
        wait = bucket.time_until_available(t)
        if wait > 0:
            assert not bucket.try_acquire(t)
            t += wait
        assert bucket.try_acquire(t)


def test_a_clock_stepping_back_never_lets_more_through() -> None:
    bucket = TokenBucket(2, 10.0)
    assert bucket.try_acquire(100.0)
    assert bucket.try_acquire(100.0)
    assert not bucket.try_acquire(95.0)
    assert not bucket.try_acquire(50.0)
    assert bucket.time_until_available(50.0) == pytest.approx(60.0)
    assert bucket.try_acquire(110.0)
    # A grant asked for with a stepped-back clock counts from the latest time seen.
    late = TokenBucket(2, 10.0)
    assert late.try_acquire(100.0) and late.try_acquire(95.0)
    assert late.granted_in_window(105.5) == 2
    assert not late.try_acquire(105.5)


def test_channels_are_limited_separately() -> None:
    limiter = RateLimiter(2, 30.0)
    assert limiter.try_acquire("streamer_a", 0.0)
    assert limiter.try_acquire("streamer_a", 0.0)
    assert not limiter.try_acquire("Streamer_A", 1.0)  # channel names are case-insensitive
    assert limiter.try_acquire("streamer_b", 1.0)
    assert limiter.time_until_available("streamer_a", 1.0) == pytest.approx(29.0)
    assert limiter.time_until_available("streamer_b", 1.0) == 0.0


def test_role_picks_the_capacity() -> None:
    settings = ReplySettings(rate_messages=12, moderator_rate_messages=80, rate_window_s=30.0)
    normal, mod = for_role(False, settings), for_role(True, settings)
    assert sum(normal.try_acquire("c", 0.0) for _ in range(200)) == 12
    assert sum(mod.try_acquire("c", 0.0) for _ in range(200)) == 80


def test_invalid_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="RATE_MESSAGES"):
        TokenBucket(0, 30.0)
    with pytest.raises(ConfigError, match="RATE_WINDOW_S"):
        RateLimiter(5, 0.0)
