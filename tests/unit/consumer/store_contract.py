"""Behaviour every IdempotencyStore must have; run against each store by its own test module."""

from __future__ import annotations

from typing import Any

import pytest

from broker.consumer import IdempotencyStore
from broker.consumer.store import BatchingStore, StopBatch

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


THIRD = ("/apple/locations/uid-1", "n-3")


async def run_batch_runs_each_new_key_once_in_order(store: IdempotencyStore[Any]) -> None:
    assert isinstance(store, BatchingStore)
    await store.run_once(KEY, _noop)
    calls: list[int] = []

    async def work(i: int, tx: Any) -> None:
        calls.append(i)

    result = await store.run_batch([OTHER, KEY, THIRD, OTHER], work)
    assert (result.ran, result.error, result.failed_at) == ([True, False, True, False], None, None)
    assert calls == [0, 2]
    assert await store.is_processed(OTHER)
    assert await store.is_processed(THIRD)
    again = await store.run_batch([THIRD, OTHER], work)
    assert again.ran == [False, False]
    assert calls == [0, 2]


async def run_batch_stops_at_the_first_failure(store: IdempotencyStore[Any]) -> None:
    assert isinstance(store, BatchingStore)
    boom = ValueError("boom")
    calls: list[int] = []

    async def work(i: int, tx: Any) -> None:
        calls.append(i)
        if i == 1:
            raise boom

    result = await store.run_batch([KEY, OTHER, THIRD], work)
    assert (result.error, result.failed_at) == (boom, 1)
    assert calls == [0, 1]  # nothing after the failure was tried
    assert len(result.ran) <= 1
    assert all(result.ran)
    assert await store.is_processed(KEY) is (len(result.ran) == 1)  # final prefix is recorded
    assert not await store.is_processed(OTHER)
    assert not await store.is_processed(THIRD)


async def run_batch_stopped_early_keeps_what_ran(store: IdempotencyStore[Any]) -> None:
    """StopBatch (revocation) before key 1: key 0 is final, keys 1 and 2 stay unrecorded."""
    assert isinstance(store, BatchingStore)
    calls: list[int] = []

    async def work(i: int, tx: Any) -> None:
        if i == 1:
            raise StopBatch
        calls.append(i)

    result = await store.run_batch([KEY, OTHER, THIRD], work)
    assert (result.ran, result.error) == ([True], None)
    assert calls == [0]
    assert await store.is_processed(KEY)
    assert not await store.is_processed(OTHER)
    assert not await store.is_processed(THIRD)

    async def ok(i: int, tx: Any) -> None:
        return None

    assert (await store.run_batch([OTHER, THIRD], ok)).ran == [True, True]  # claims released


ALL = [
    run_once_runs_work_once,
    failed_work_leaves_key_unrecorded,
    failures_are_counted_and_cleared,
    run_batch_runs_each_new_key_once_in_order,
    run_batch_stops_at_the_first_failure,
    run_batch_stopped_early_keeps_what_ran,
]
