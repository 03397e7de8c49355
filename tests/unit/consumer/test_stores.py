"""InMemoryStore and SQLiteStore: the store contract, retention, bounds and durability."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.consumer import DEFAULT_RETENTION_S, InMemoryStore, SQLiteStore, StoreError
from tests.unit.consumer import store_contract
from tests.unit.consumer.store_contract import KEY, OTHER


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _noop(tx: None) -> None:
    return None


@pytest.mark.parametrize("check", store_contract.ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_store_contract(
    kind: str, check: Callable[[Any], Awaitable[None]], tmp_path: Path
) -> None:
    store = InMemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        await check(store)
    finally:
        await store.close()


def test_default_retention_covers_the_longest_redelivery_horizon() -> None:
    seven_days = 7 * 24 * 3600  # Pub/Sub retention of unacked EMM notifications; Kafka default
    assert seven_days < DEFAULT_RETENTION_S


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_ids_are_forgotten_only_after_the_retention(kind: str, tmp_path: Path) -> None:
    clock = Clock()
    store = (
        InMemoryStore(retention_s=100, clock=clock)
        if kind == "memory"
        else SQLiteStore(tmp_path / "s.db", retention_s=100, clock=clock)
    )
    await store.open()
    try:
        await store.run_once(KEY, _noop)
        await store.record_failure(OTHER)
        clock.now += 99
        assert await store.purge_expired() == 0
        assert await store.run_once(KEY, _noop) is False
        clock.now += 2
        assert await store.purge_expired() == 2
        assert await store.run_once(KEY, _noop) is True
        assert await store.record_failure(OTHER) == 1
    finally:
        await store.close()


async def test_memory_store_is_bounded_oldest_first() -> None:
    store = InMemoryStore(max_entries=2)
    for n in range(3):
        await store.run_once(("s", str(n)), _noop)
    assert len(store) == 2
    assert not await store.is_processed(("s", "0"))
    assert await store.is_processed(("s", "2"))


async def test_memory_store_keeps_a_re_recorded_id_at_the_newest_end() -> None:
    """An id recorded again after it expired (not purged yet) is the newest entry: the purge
    (oldest first, stops at the first live one) and the bound evict the others before it."""
    clock = Clock()
    store = InMemoryStore(max_entries=2, retention_s=100, clock=clock)
    await store.run_batch([("s", "0")], lambda i, tx: _noop(tx))
    clock.now += 101
    await store.run_batch([("s", "1"), ("s", "0")], lambda i, tx: _noop(tx))
    assert await store.purge_expired() == 0  # "0" was recorded again at the batch's time
    clock.now += 1
    await store.run_once(("s", "2"), _noop)
    assert [await store.is_processed(("s", k)) for k in "012"] == [True, False, True]


async def test_sqlite_store_remembers_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dedupe.db"
    store = SQLiteStore(path)
    await store.open()
    await store.run_once(KEY, _noop)
    assert await store.record_failure(OTHER) == 1
    await store.close()
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        assert await reopened.run_once(KEY, _noop) is False
        assert await reopened.record_failure(OTHER) == 2
    finally:
        await reopened.close()


async def test_sqlite_store_used_before_open_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await SQLiteStore(tmp_path / "s.db").is_processed(KEY)


async def test_sqlite_store_on_unusable_path_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError):
        await SQLiteStore(blocker / "s.db").open()


async def test_sqlite_store_page_cache_is_set_and_validated(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", cache_mib=8)
    await store.open()
    try:
        rows = await store._call("PRAGMA cache_size", ())
    finally:
        await store.close()
    assert rows == [(-8 * 1024,)]
    with pytest.raises(ValueError, match="cache_mib"):
        SQLiteStore(tmp_path / "t.db", cache_mib=0)
