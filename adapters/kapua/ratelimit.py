"""A token bucket bounding the request rate to one Kapua endpoint."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """At most ``rate_per_s`` acquisitions per second on average, bursts up to ``burst``.

    ``acquire()`` waits (never busy-loops) until a token is available. Fair in arrival order
    because waiters take the lock one at a time.
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        self._rate = rate_per_s
        self._burst = burst if burst is not None else max(1.0, rate_per_s / 10)
        self._tokens = self._burst
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)
