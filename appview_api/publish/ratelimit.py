"""Token buckets, refilled continuously: writes per account per minute, and upload bytes per hour.

A bucket holds up to `per_minute` tokens and refills at `per_minute` a minute, so an account may burst a
minute's allowance and then go at the steady rate. Full buckets carry no information and are dropped, so
the map holds only accounts that wrote within the last minute. Sans-I/O: the clock is passed in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._swept_at = clock()

    def acquire(self, key: str) -> int | None:
        """Take one token for `key`: None when allowed, else the whole seconds to wait (Retry-After)."""
        if self._capacity <= 0:
            return None  # a limit of 0 means unlimited
        now = self._clock()
        self._forget_full(now)
        tokens, at = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._rate))
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def _forget_full(self, now: float) -> None:
        """Once a refill period, drop the buckets untouched for that long: they are full again."""
        refill_seconds = self._capacity / self._rate
        if now - self._swept_at < refill_seconds:
            return
        self._swept_at = now
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_seconds}


class ByteBudget:
    """Upload bytes the whole service takes an hour, from every account together, so that more accounts
    (a stranger can make as many as a PDS allows) do not buy more. It may all be spent in a burst."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_hour)
        self._rate = per_hour / 3600.0
        self._clock = clock
        self._tokens = self._capacity
        self._at = clock()

    def take(self, size: int) -> int | None:
        """Spend `size` bytes: None when there were enough, else the whole seconds until there will be."""
        if self._capacity <= 0:
            return None  # a budget of 0 means unlimited
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < size:
            return max(1, math.ceil((size - self._tokens) / self._rate))
        self._tokens -= size
        return None
