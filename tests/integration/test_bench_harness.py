"""The benchmark harness works (not its numbers): wrk drives the three HTTP servers, each in its
own process, every 2xx is found in Kafka, the consumer variants all finish, the hand-written
SQLite peer dedupes, the consumer bench's window charges a store's deferred work, the table
renders."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from bench import android
from bench.consumer import (
    _create_topic,
    _fill,
    _idempotent,
    _Run,
    _SQLiteDedupe,
    bench_consumer,
)
from bench.http import bench_http
from bench.run import apple_notification, build_event, table
from broker.consumer import InMemoryStore
from broker.consumer.store import BatchResult, EventKey

pytestmark = [pytest.mark.kafka]


def test_http_harness_drives_every_server_and_finds_every_2xx_in_kafka(
    kafka_bootstrap: str,
) -> None:
    result = bench_http(kafka_bootstrap, rounds=1, duration_s=1, concurrencies=(4,))
    medians = result["c4"]["medians"]
    assert set(medians) == {"bare", "fastapi", "broker"}
    for name, m in medians.items():
        assert m["errors"] == 0, name
        assert m["req_per_s"] > 0, name
        assert m["cpu_us_per_req"] > 0, name
    for name in ("fastapi", "broker"):
        check = result["every_2xx_in_kafka"][name]
        assert check["records_added"] >= check["answered_2xx"] > 0
    assert "webhook c4: broker" in table({"http": result})


def test_consumer_harness_runs_every_variant_to_the_end(kafka_bootstrap: str) -> None:
    result = asyncio.run(
        bench_consumer(
            kafka_bootstrap,
            300,
            1,
            lambda n: [build_event(apple_notification(i)) for i in range(n)],
            make_random_id_events=lambda n: [
                build_event(apple_notification(i, random_id=True)) for i in range(n)
            ],
        )
    )
    assert set(result["medians"]) == {
        "bare",
        "bare+validate",
        "bare+sqlite",
        "bare+validate+sqlite",
        "bare+sqlite, random ids",
        "bare+validate+sqlite, random ids",
        "memory",
        "sqlite",
        "sqlite, write awaited",
        "sqlite, random ids",
        "sqlite, random ids, write awaited",
    }
    assert all(v > 0 for v in result["medians"].values())
    assert result["ratios"]["bare"] == 1.0
    assert result["first_to_nth"]["per_cpu_s_ratios"]["bare"] == 1.0
    assert set(result["first_to_nth"]["medians"]) == set(result["medians"])


def test_bare_sqlite_peer_records_each_key_once_with_the_stores_pragmas(tmp_path: Path) -> None:
    async def run() -> list[list[tuple[str, str]]]:
        dedupe = _SQLiteDedupe(tmp_path / "peer.db")
        await dedupe.open()
        try:
            return [
                await dedupe.new_keys([("a", "1"), ("b", "1"), ("a", "1"), ("a", "2")]),
                await dedupe.new_keys([("a", "2"), ("a", "3"), ("b", "1")]),
            ]
        finally:
            await dedupe.close()

    first, second = asyncio.run(run())
    assert first == [("a", "1"), ("b", "1"), ("a", "2")]
    assert second == [("a", "3")]
    conn = sqlite3.connect(tmp_path / "peer.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM seen").fetchone() == (4,)
    finally:
        conn.close()


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class _DefersWork:
    """An in-memory store that does ``burn_s`` of CPU work in its first batch, before any record is
    final, and another ``burn_s`` in ``close()``, after the last one is (as a store that defers a
    merge or a write to close would)."""

    def __init__(self, burn_s: float) -> None:
        self._store = InMemoryStore()
        self._burn_s = burn_s
        self._first_batch = True
        self.open = self._store.open
        self.run_once = self._store.run_once
        self.is_processed = self._store.is_processed
        self.record_failure = self._store.record_failure
        self.clear_failures = self._store.clear_failures
        self.purge_expired = self._store.purge_expired

    async def run_batch(
        self, keys: Sequence[EventKey], work: Callable[[int, None], Awaitable[None]]
    ) -> BatchResult:
        if self._first_batch:
            self._first_batch = False
            _burn(self._burn_s)
        return await self._store.run_batch(keys, work)

    async def close(self) -> None:
        _burn(self._burn_s)
        await self._store.close()


def test_consumer_window_charges_the_first_batch_and_the_work_deferred_to_close(
    kafka_bootstrap: str,
) -> None:
    burn_s, n = 0.2, 200

    async def run() -> _Run:
        topic = f"clock{uuid.uuid4().hex[:6]}.events"
        await _create_topic(kafka_bootstrap, topic)
        await _fill(kafka_bootstrap, topic, [build_event(apple_notification(i)) for i in range(n)])
        return await _idempotent(kafka_bootstrap, topic, n, _DefersWork(burn_s))

    run_ = asyncio.run(run())
    # the window (start -> stop returned) holds the previous one (first outcome -> n-th outcome)
    # and both burns, which lie outside it; wall time passes at least as fast as a thread's CPU
    assert run_.cpu_s - run_.first_to_nth_cpu_s >= 2 * burn_s
    assert run_.wall_s - run_.first_to_nth_wall_s >= 2 * burn_s


def test_android_harness_offers_and_measures_every_notification(kafka_bootstrap: str) -> None:
    result = asyncio.run(android.run(kafka_bootstrap, rate=300, seconds=1, set_size=100))
    assert result["offered"] == result["acked"] > 0
    assert result["missed_ack_deadlines"] == 0
    assert result["arrival_to_ack_ms"]["p99"] >= result["arrival_to_ack_ms"]["p50"] > 0
