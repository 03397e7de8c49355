"""PartitionWorker: in-order processing, commit offset only past final records, clean finish."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from broker.consumer import ConsumedRecord
from broker.consumer.partitions import PartitionWorker


def _rec(offset: int) -> ConsumedRecord:
    return ConsumedRecord(topic="t", partition=0, offset=offset, key=None, value=b"")


class Recorder:
    def __init__(self, block_at: int | None = None) -> None:
        self.seen: list[int] = []
        self.block_at = block_at
        self.blocked = asyncio.Event()
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()

    async def process(self, record: ConsumedRecord) -> object:
        if record.offset == self.block_at:
            self.blocked.set()
            await self.release.wait()
        async with self._changed:
            self.seen.append(record.offset)
            self._changed.notify_all()
        return None

    async def start_batch(
        self, records: Sequence[ConsumedRecord], stop: Callable[[], bool]
    ) -> Callable[[], Awaitable[Sequence[object]]]:
        done: list[object] = []
        for record in records:
            if stop():
                break
            done.append(await self.process(record))

        async def settle() -> Sequence[object]:
            return done

        return settle

    async def wait_seen(self, count: int) -> None:
        """Return once ``count`` records were processed (the worker has then moved its commit
        offset: it does so before its next await, which is before this waiter can resume)."""
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: len(self.seen) >= count)


async def test_records_are_processed_in_order_and_commit_offset_follows() -> None:
    recorder = Recorder()
    worker = PartitionWorker("t", 0, recorder)
    worker.start()
    worker.enqueue([_rec(5), _rec(6), _rec(7)])
    await recorder.wait_seen(3)
    assert worker.commit_offset == 8
    worker.enqueue([_rec(6), _rec(7), _rec(8)])  # stale re-fetch: only 8 is new
    await recorder.wait_seen(4)
    assert worker.commit_offset == 9
    await worker.finish(1.0)
    assert recorder.seen == [5, 6, 7, 8]
    assert worker.failure is None


async def test_finish_waits_for_the_in_flight_record_and_abandons_the_rest() -> None:
    recorder = Recorder(block_at=2)
    worker = PartitionWorker("t", 0, recorder)
    worker.start()
    worker.enqueue([_rec(1), _rec(2), _rec(3)])
    await asyncio.wait_for(recorder.blocked.wait(), 5)
    worker.enqueue([_rec(4)])  # queued behind the in-flight batch
    finishing = asyncio.create_task(worker.finish(5.0))
    await asyncio.sleep(0)
    recorder.release.set()
    await finishing
    assert recorder.seen == [1, 2]  # in-flight 2 completed; 3 (same batch) and 4 abandoned
    assert worker.commit_offset == 3
    worker.enqueue([_rec(5)])  # ignored once finishing
    assert worker.buffered == 0


async def test_batches_hold_at_most_max_batch_records_and_report_each_take() -> None:
    recorder = Recorder()
    taken: list[int] = []
    worker = PartitionWorker(
        "t", 0, recorder, max_batch=2, on_taken=lambda w: taken.append(w.buffered)
    )
    worker.enqueue([_rec(n) for n in range(5)])
    worker.start()
    await recorder.wait_seen(5)
    assert taken == [3, 1, 0]  # what was left queued after each batch of at most 2 was taken
    assert worker.commit_offset == 5
    await worker.finish(1.0)


async def test_in_flight_batch_past_the_timeout_is_cancelled_and_not_committed() -> None:
    recorder = Recorder(block_at=2)
    worker = PartitionWorker("t", 0, recorder)
    worker.start()
    worker.enqueue([_rec(1), _rec(2)])
    await asyncio.wait_for(recorder.blocked.wait(), 5)
    await worker.finish(0.01)
    assert recorder.seen == [1]
    assert worker.commit_offset is None  # no record of the abandoned batch is committed


async def test_a_crashing_processor_is_reported_as_failure() -> None:
    class Crashing:
        async def start_batch(
            self, records: Sequence[ConsumedRecord], stop: Callable[[], bool]
        ) -> Callable[[], Awaitable[Sequence[object]]]:
            raise RuntimeError("bug")

    worker = PartitionWorker("t", 0, Crashing())
    worker.start()
    worker.enqueue([_rec(0)])
    assert worker._task is not None
    await asyncio.wait({worker._task}, timeout=5)
    assert isinstance(worker.failure, RuntimeError)
    assert worker.commit_offset is None
    await worker.finish(0.1)
