"""PostgresStore against a real PostgreSQL: the store contract, shared transaction, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from broker.consumer import PostgresStore, StoreError
from tests.unit.consumer import store_contract
from tests.unit.consumer.store_contract import KEY

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("check", store_contract.ALL, ids=lambda f: f.__name__)
async def test_store_contract(check: Callable[[Any], Awaitable[None]], postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn)
    await store.open()
    try:
        await check(store)
    finally:
        await store.close()


async def test_handler_writes_and_the_id_commit_or_roll_back_together(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, table="dedupe")
    await store.open()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE effects (id text)")

        async def failing(tx: asyncpg.Connection) -> None:
            await tx.execute("INSERT INTO effects VALUES ('written-then-failed')")
            raise RuntimeError("after the write")

        with pytest.raises(RuntimeError):
            await store.run_once(KEY, failing)
        assert await conn.fetchval("SELECT count(*) FROM effects") == 0
        assert await conn.fetchval("SELECT count(*) FROM dedupe") == 0

        async def ok(tx: asyncpg.Connection) -> None:
            assert tx.is_in_transaction()
            await tx.execute("INSERT INTO effects VALUES ('ok')")

        assert await store.run_once(KEY, ok) is True
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1
        assert await conn.fetchval("SELECT count(*) FROM dedupe") == 1
    finally:
        await conn.close()
        await store.close()


async def test_a_failing_handler_rolls_back_the_whole_batch(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, table="dedupe_batch")
    await store.open()
    conn = await asyncpg.connect(postgres_dsn)
    keys = [("s", "a"), ("s", "b"), ("s", "c")]
    try:
        await conn.execute("CREATE TABLE effects (id text)")

        async def write(i: int, tx: asyncpg.Connection) -> None:
            await tx.execute("INSERT INTO effects VALUES ($1)", keys[i][1])
            if i == 1 and fail:
                raise RuntimeError("after the write")

        fail = True
        result = await store.run_batch(keys, write)
        assert (result.ran, result.failed_at) == ([], 1)
        assert await conn.fetchval("SELECT count(*) FROM effects") == 0
        assert await conn.fetchval("SELECT count(*) FROM dedupe_batch") == 0
        fail = False
        assert (await store.run_batch(keys, write)).ran == [True, True, True]
        assert await conn.fetchval("SELECT count(*) FROM effects") == 3
        assert await conn.fetchval("SELECT count(*) FROM dedupe_batch") == 3
    finally:
        await conn.close()
        await store.close()


async def test_concurrent_runs_of_one_id_keep_one_effect(postgres_dsn: str) -> None:
    """Two consumers on the same event at once (a zombie and the new owner): the second waits on
    the id row and then skips; only one handler's writes are kept."""
    first, second = PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)
    await first.open()
    await second.open()
    inside = asyncio.Event()
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(tx: asyncpg.Connection) -> None:
        calls.append("first")
        inside.set()
        await release.wait()

    async def fast(tx: asyncpg.Connection) -> None:
        calls.append("second")

    try:
        a = asyncio.create_task(first.run_once(KEY, slow))
        await asyncio.wait_for(inside.wait(), 10)
        b = asyncio.create_task(second.run_once(KEY, fast))
        release.set()
        assert list(await asyncio.wait_for(asyncio.gather(a, b), 10)) == [True, False]
        assert calls == ["first"]
    finally:
        await first.close()
        await second.close()


async def test_purge_forgets_rows_older_than_retention(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, retention_s=0.0)
    await store.open()
    try:
        assert await store.run_once(KEY, _noop) is True
        await store.record_failure(("s", "x"))
        assert await store.purge_expired() == 2
        assert not await store.is_processed(KEY)
    finally:
        await store.close()


async def _noop(tx: asyncpg.Connection) -> None:
    return None


def test_table_name_is_validated() -> None:
    with pytest.raises(ValueError, match="table"):
        PostgresStore("postgresql://x/y", table="bad; DROP TABLE x")


async def test_unreachable_server_raises_store_error(postgres_dsn: str) -> None:
    from broker.devtools.devkafka import free_port

    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/nope")
    with pytest.raises(StoreError):
        await store.open()
