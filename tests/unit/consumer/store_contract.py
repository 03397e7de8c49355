"""Behaviour every IdempotencyStore must have; run against each store by its own test module."""

from __future__ import annotations

from typing import Any

import pytest

from broker.consumer import IdempotencyStore

KEY = ("/apple/locations/uid-1", "n-1")
OTHER = ("/apple/locations/uid-2", "n-1")  # same id, other source: a different event


async def _noop(tx: Any) -> None:
    return None


async def run_once_runs_work_once(store: IdempotencyStore[Any]) -> None:
    calls: list[object] = []

    async def work(tx: Any) -> None:
        calls.append(tx)

    assert not await store.is_processed(KEY)
    assert await store.run_once(KEY, work) is True
    assert await store.run_once(KEY, work) is False
    assert await store.is_processed(KEY)
    assert len(calls) == 1
    assert await store.run_once(OTHER, work) is True
    assert len(calls) == 2


async def failed_work_leaves_key_unrecorded(store: IdempotencyStore[Any]) -> None:
    class Boom(Exception):
        pass

    async def failing(tx: Any) -> None:
        raise Boom

    with pytest.raises(Boom):
        await store.run_once(KEY, failing)
    assert not await store.is_processed(KEY)
    assert await store.run_once(KEY, _noop) is True


async def failures_are_counted_and_cleared(store: IdempotencyStore[Any]) -> None:
    assert [await store.record_failure(KEY) for _ in range(3)] == [1, 2, 3]
    assert await store.record_failure(OTHER) == 1
    await store.clear_failures(KEY)
    assert await store.record_failure(KEY) == 1


ALL = [run_once_runs_work_once, failed_work_leaves_key_unrecorded, failures_are_counted_and_cleared]
