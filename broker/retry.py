"""The one backoff of the project and the one ``Retry-After`` parser.

Every retry loop (vendor clients, pullers, the consumer's processor) takes its delays from
:class:`Backoff` and reads a server's ``Retry-After`` with :func:`parse_retry_after`, so "how long
do we wait before trying again" has one answer, tested once. Whether to retry at all is the
error's ``retriable`` flag (:class:`broker.errors.BrokerError`).

Delay of attempt ``n`` (1 for the first retry)::

    min(max_s, initial_s * multiplier ** (n - 1)) * uniform(1 - jitter, 1)

so ``max_s`` is a true maximum and retries of many clients spread out instead of retrying in step;
then raised to a server's ``Retry-After`` (itself capped at ``max_s``, so a hostile or confused
server cannot park a loop for hours). Random and sleep are injectable: tests get exact delays and
never sleep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

Sleep = Callable[[float], Awaitable[None]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = _utc_now) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (RFC 9110 10.2.3), else None.

    Accepts delta-seconds (``"120"``, also ``"1.5"`` as some APIs send) and an HTTP-date (the
    seconds until then, from ``now``). Negative values and past dates mean 0; anything else
    (absent, empty, garbage) is None, i.e. "no advice", and the caller's backoff applies.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: they are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class Backoff:
    """Exponential backoff with jitter; see the module docstring for the formula.

    Use it statefully (:meth:`next_delay` / :meth:`wait`, :meth:`reset` after a success) or
    statelessly (:meth:`delay` for a given attempt number). ``rng`` and ``sleep`` are injectable.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if multiplier < 1 or not 0 <= jitter <= 1:
            raise ValueError("need multiplier >= 1 and 0 <= jitter <= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.attempts = 0

    def delay(self, attempt: int, at_least_s: float | None = None) -> float:
        """The delay before retry number ``attempt`` (1-based); ``at_least_s``: a Retry-After."""
        exponent = min(max(attempt - 1, 0), 64)  # past the cap anyway; avoids float overflow
        base = min(self.max_s, self.initial_s * self.multiplier**exponent)
        delay = base * self._rng.uniform(1 - self.jitter, 1)
        if at_least_s is not None:
            delay = max(delay, min(at_least_s, self.max_s))
        return delay

    def next_delay(self, at_least_s: float | None = None) -> float:
        """The delay before the next retry, counting it as one more attempt."""
        self.attempts += 1
        return self.delay(self.attempts, at_least_s)

    async def wait(self, at_least_s: float | None = None) -> float:
        """Sleep :meth:`next_delay` (with the injected sleep); returns the delay slept."""
        delay = self.next_delay(at_least_s)
        await self._sleep(delay)
        return delay

    def reset(self) -> None:
        """Start over from ``initial_s`` (after a success)."""
        self.attempts = 0
