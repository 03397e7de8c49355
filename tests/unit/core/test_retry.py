"""The one backoff and the one Retry-After parser (broker/retry.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from broker.retry import Backoff, parse_retry_after

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 10, 1000])
def test_delay_grows_exponentially_is_capped_and_jittered_down_only(attempt: int) -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.5, rng=random.Random(attempt))
    base = min(30.0, 0.5 * 2 ** (attempt - 1))
    delays = [backoff.delay(attempt) for _ in range(50)]
    assert all(base * 0.5 <= d <= base for d in delays)
    assert len(set(delays)) > 1  # jittered: clients do not retry in step


def test_without_jitter_the_delays_are_exact_and_reset_starts_over() -> None:
    backoff = Backoff(1.0, 8.0, multiplier=3.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(4)] == [1.0, 3.0, 8.0, 8.0]
    assert backoff.attempts == 4
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_retry_after_is_a_floor_capped_at_the_maximum() -> None:
    backoff = Backoff(0.1, 10.0, jitter=0.0)
    assert backoff.delay(1, at_least_s=3.0) == 3.0
    assert backoff.delay(1, at_least_s=60.0) == 10.0
    assert backoff.delay(1, at_least_s=0.0) == 0.1


async def test_wait_sleeps_the_delay_with_the_injected_sleep() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    backoff = Backoff(2.0, 60.0, jitter=0.0, sleep=sleep)
    assert await backoff.wait() == 2.0
    assert await backoff.wait(at_least_s=30.0) == 30.0
    assert slept == [2.0, 30.0]


def test_nonsense_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(1.0, 2.0, multiplier=0.5)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 2.0, jitter=1.5)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Tue, 01 Dec 2026 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("Tuesday, 01-Dec-26 12:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Tue Dec  1 12:00:10 2026", 10.0),  # obsolete asctime form
        ("Tue, 01 Dec 2026 11:00:00 GMT", 0.0),  # in the past
        (None, None),
        ("", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=lambda: NOW) == seconds
