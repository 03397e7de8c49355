"""One worker task per assigned partition: records of a partition are handled one at a time, in
offset order; different partitions run concurrently.

The worker's :attr:`PartitionWorker.commit_offset` is the offset after the last record whose fate
is final (processed, duplicate or dead-lettered): it is the only offset the consumer may commit
for the partition. It never moves past a record that is still in flight or queued.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

from broker.consumer.records import ConsumedRecord

log = logging.getLogger(__name__)


class Processor(Protocol):
    """Decides one record's fate (RecordProcessor); returns only when that fate is final."""

    async def process(self, record: ConsumedRecord) -> object: ...


class PartitionWorker:
    """Queue and task of one partition. Create, :meth:`start`, feed with :meth:`enqueue`,
    end with :meth:`finish` (on revocation or shutdown)."""

    def __init__(self, topic: str, partition: int, processor: Processor) -> None:
        self.topic = topic
        self.partition = partition
        self._processor = processor
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

    def enqueue(self, records: Iterable[ConsumedRecord]) -> None:
        """Append records in offset order; records at or before the last enqueued are dropped
        (a stale fetch after a rebalance must not reorder or repeat work)."""
        if self._closing:
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
        """Stop after the in-flight record: queued records are abandoned (not committed, so the
        next owner reads them again). An in-flight record still running after ``timeout_s`` is
        cancelled (abandoned too). Idempotent."""
        self._closing = True
        self._queue.clear()
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning(
                "partition %s[%d]: in-flight record abandoned after %.1fs",
                self.topic, self.partition, timeout_s,
            )  # fmt: skip
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._closing:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            record = self._queue.popleft()
            await self._processor.process(record)
            self.commit_offset = record.offset + 1
