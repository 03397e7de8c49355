"""One worker task per assigned partition: records of a partition are handled in offset order, in
batches of what was fetched (at most ``max_batch`` records); different partitions run concurrently.

The worker's :attr:`PartitionWorker.commit_offset` is the offset after the last batch whose
records' fates are all final (processed, duplicate or dead-lettered): it is the only offset the
consumer may commit for the partition. It never moves past a record that is still in flight or
queued.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from broker.consumer.records import ConsumedRecord

log = logging.getLogger(__name__)


class Processor(Protocol):
    """Decides the fate of a batch of one partition's records, in order (RecordProcessor)."""

    async def start_batch(
        self, records: Sequence[ConsumedRecord], stop: Callable[[], bool]
    ) -> Callable[[], Awaitable[Sequence[object]]]:
        """Work on the batch; return ``settle``, whose result is the outcomes of the leading
        records whose fate is final: all of them, or fewer when ``stop()`` turned true on the
        way. Nothing of the batch is final before ``settle()`` returned; batches are settled in
        the order they were started."""
        ...


_Unsettled = tuple[list[ConsumedRecord], Callable[[], Awaitable[Sequence[object]]]]


class PartitionWorker:
    """Queue and task of one partition. Create, :meth:`start`, feed with :meth:`enqueue`,
    end with :meth:`finish` (on revocation or shutdown)."""

    def __init__(
        self,
        topic: str,
        partition: int,
        processor: Processor,
        *,
        max_batch: int = 500,
        on_taken: Callable[[PartitionWorker], None] | None = None,
    ) -> None:
        """``on_taken`` is called each time the worker took a batch off its queue (the consumer
        resumes a paused partition from there, without waiting for its next poll)."""
        self.topic = topic
        self.partition = partition
        self._processor = processor
        self._max_batch = max_batch
        self._on_taken = on_taken
        self._queue: collections.deque[ConsumedRecord] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._last_enqueued = -1
        self._first_seen: int | None = None
        self.commit_offset: int | None = None
        self.committed: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._run(), name=f"consumer-{self.topic}-{self.partition}"
        )

    @property
    def buffered(self) -> int:
        return len(self._queue)

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the worker task unexpectedly, if any."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def next_to_process(self) -> int | None:
        """Offset of the next record this worker has to decide (for lag)."""
        if self.commit_offset is not None:
            return self.commit_offset
        return self._first_seen

    def enqueue(self, records: Sequence[ConsumedRecord]) -> None:
        """Append records in (strictly increasing) offset order; records at or before the last
        enqueued are dropped (a stale fetch after a rebalance must not reorder or repeat work)."""
        if self._closing or not records:
            return
        if records[0].offset > self._last_enqueued:  # the usual case: a fetch of new records
            if self._first_seen is None:
                self._first_seen = records[0].offset
            self._last_enqueued = records[-1].offset
            self._queue.extend(records)
            self._wake.set()
            return
        for record in records:
            if record.offset <= self._last_enqueued:
                continue
            if self._first_seen is None:
                self._first_seen = record.offset
            self._last_enqueued = record.offset
            self._queue.append(record)
        if self._queue:
            self._wake.set()

    async def finish(self, timeout_s: float) -> None:
        """Stop after the in-flight record: the rest of its batch and the queued records are
        abandoned (not committed, so the next owner reads them again); the batch's records
        decided so far are made final and committable. An in-flight record still running after
        ``timeout_s`` is cancelled, and with it its batch (none of its records is committed
        then). Idempotent."""
        self._closing = True
        self._queue.clear()
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning(
                "partition %s[%d]: in-flight record abandoned after %.1fs (and its batch)",
                self.topic, self.partition, timeout_s,
            )  # fmt: skip
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Batch k+1 is worked on before batch k is settled (its store write may still run
        meanwhile); the commit offset moves past batch k only once it is settled."""
        unsettled: _Unsettled | None = None
        while not self._closing:
            if not self._queue:
                if unsettled is not None:  # nothing to overlap with: settle now
                    await self._settle(*unsettled)
                    unsettled = None
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
            if self._on_taken is not None:
                self._on_taken(self)
            settle = await self._processor.start_batch(batch, self._stopping)
            if unsettled is not None:
                await self._settle(*unsettled)
            unsettled = (batch, settle)
        if unsettled is not None:
            await self._settle(*unsettled)

    async def _settle(
        self, batch: list[ConsumedRecord], settle: Callable[[], Awaitable[Sequence[object]]]
    ) -> None:
        decided = await settle()
        if decided:
            self.commit_offset = batch[len(decided) - 1].offset + 1

    def _stopping(self) -> bool:
        return self._closing
