"""SQLiteStore's pipelined batches: a batch's ids count as recorded while their write runs, a
failed write loses nothing (not recorded, not committed, written again or redelivered), and the
partition's commit offset never moves past a batch whose write is not done."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import broker.consumer.sqlite_store as sqlite_store
from broker.consumer import ConsumerSettings, ProcessingOutcome, SQLiteStore, StoreError
from broker.consumer.metrics import ConsumerMetrics
from broker.consumer.partitions import PartitionWorker
from broker.consumer.processor import RecordProcessor
from broker.consumer.records import ConsumedRecord
from broker.events import CanonicalEvent
from tests.integration.consumer.helpers import sample_event
from tests.unit.consumer.fakes import FakeDeadLetters, record_of

SOURCE = sample_event(0).source


async def _work(i: int, tx: None) -> None:
    return None


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Set it to let the writer thread go on (set at teardown whatever happened)."""
    event = threading.Event()
    yield event
    event.set()


def _block_writer(store: SQLiteStore, gate: threading.Event) -> None:
    """The store's writer thread waits for ``gate`` before its next job (a slow disk)."""
    assert store._thread is not None
    store._thread.submit(gate.wait)


class _FailingWrites:
    """Replaces the store's batch write: the first ``times`` calls fail like a broken disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
        self.times = times
        self.calls = 0
        self.third_call = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._real = sqlite_store._record
        monkeypatch.setattr(sqlite_store, "_record", self)

    def __call__(self, conn: sqlite3.Connection, rows: list[tuple[str, str, float]]) -> None:
        self.calls += 1
        if self.calls == 3:
            self._loop.call_soon_threadsafe(self.third_call.set)
        if self.calls <= self.times:
            raise sqlite3.OperationalError("disk I/O error")
        self._real(conn, rows)


async def test_ids_being_written_are_duplicates_for_the_next_batch(
    tmp_path: Path, gate: threading.Event
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        _block_writer(store, gate)
        first, write = await store.run_batch_pipelined([(SOURCE, "a"), (SOURCE, "b")], _work)
        assert first.ran == [True, True]
        second, later = await store.run_batch_pipelined([(SOURCE, "b"), (SOURCE, "c")], _work)
        assert second.ran == [False, True]  # b's write has not even started
        assert await store.is_processed((SOURCE, "a"))
        gate.set()
        await write.wait()
        await later.wait()
    finally:
        await store.close()
    reopened = SQLiteStore(tmp_path / "s.db")
    await reopened.open()
    try:
        assert [await reopened.is_processed((SOURCE, k)) for k in "abc"] == [True, True, True]
    finally:
        await reopened.close()


async def test_a_failed_write_is_forgotten_until_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _FailingWrites(monkeypatch, times=1)
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        result, write = await store.run_batch_pipelined([(SOURCE, "a")], _work)
        assert result.ran == [True]
        with pytest.raises(StoreError, match="disk I/O error"):
            await write.wait()
        assert not await store.is_processed((SOURCE, "a"))  # not recorded: would run again
        await write.wait()  # writes again
        assert await store.is_processed((SOURCE, "a"))
        assert writes.calls == 2
    finally:
        await store.close()


def _processor(
    store: SQLiteStore, seen: list[str], observed: list[ProcessingOutcome]
) -> tuple[RecordProcessor[None], CollectorRegistry]:
    async def handler(event: CanonicalEvent, tx: None) -> None:
        seen.append(event.id)

    def observer(outcome: ProcessingOutcome, record: ConsumedRecord) -> None:
        observed.append(outcome)

    registry = CollectorRegistry()
    settings = ConsumerSettings(
        group_id="g", retry_backoff_initial_s=0.001, retry_backoff_max_s=0.002
    )
    metrics = ConsumerMetrics.for_registry(registry)
    processor = RecordProcessor(settings, store, handler, FakeDeadLetters(), metrics, observer)
    return processor, registry


async def test_a_batch_settles_only_once_its_failed_write_was_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _FailingWrites(monkeypatch, times=2)
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    seen: list[str] = []
    observed: list[ProcessingOutcome] = []
    processor, registry = _processor(store, seen, observed)
    try:
        records = [record_of(sample_event(n), offset=n) for n in range(3)]
        settle = await processor.start_batch(records)
        assert seen == ["e0", "e1", "e2"]
        assert observed == []  # not final yet: nothing observed, nothing committable
        assert await settle() == [ProcessingOutcome.PROCESSED] * 3
        assert observed == [ProcessingOutcome.PROCESSED] * 3
        assert seen == ["e0", "e1", "e2"]  # the handlers did not run again
        errors = registry.get_sample_value("mdm_broker_consumer_store_errors_total", {"group": "g"})
        assert errors == 2
        assert all([await store.is_processed(sample_event(n).idempotency_key) for n in range(3)])
    finally:
        await store.close()


async def test_the_commit_offset_waits_for_the_write_and_an_abandoned_write_is_redelivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write never succeeds (the process dies before it): the handlers ran, yet the worker
    commits nothing, and the records run again from a store reopened on the same file."""
    writes = _FailingWrites(monkeypatch, times=10**9)
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    seen: list[str] = []
    processor, _ = _processor(store, seen, [])
    worker = PartitionWorker("events", 0, processor, max_batch=2)
    worker.start()
    try:
        worker.enqueue([record_of(sample_event(n), offset=n) for n in range(4)])
        async with asyncio.timeout(5):
            await writes.third_call.wait()  # a write failed and was retried
        assert len(seen) == 4  # both batches handled: the first batch's write failed first
        assert worker.commit_offset is None
        await worker.finish(0.05)
        assert worker.commit_offset is None
    finally:
        await store.close()
    monkeypatch.undo()
    again: list[str] = []
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        redelivery, _ = _processor(reopened, again, [])
        records = [record_of(sample_event(n), offset=n) for n in range(4)]
        outcomes: list[Any] = await redelivery.process_batch(records)
        assert outcomes == [ProcessingOutcome.PROCESSED] * 4
        assert again == ["e0", "e1", "e2", "e3"]
    finally:
        await reopened.close()
