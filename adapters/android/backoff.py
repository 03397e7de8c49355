"""Exponential backoff with jitter for vendor retry loops."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial * multiplier**n`` capped at ``maximum``, each times ``1 +- jitter``.

    :meth:`reset` after a success. ``rng`` is injectable so tests get deterministic delays.
    """

    def __init__(
        self,
        initial_s: float,
        maximum_s: float,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._multiplier = multiplier
        self._jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self, at_least_s: float | None = None) -> float:
        """The delay before the next retry; ``at_least_s`` honours a server's Retry-After."""
        base = min(self._maximum, self._initial * self._multiplier**self.attempts)
        self.attempts += 1
        delay = base * self._rng.uniform(1 - self._jitter, 1 + self._jitter)
        if at_least_s is not None:
            delay = max(delay, min(at_least_s, self._maximum))
        return delay

    def reset(self) -> None:
        self.attempts = 0
