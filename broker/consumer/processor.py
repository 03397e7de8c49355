"""Processing of records: decode, dedupe, call the handler, retry, dead-letter.

:meth:`RecordProcessor.process` (one record) and :meth:`RecordProcessor.process_batch` (a
partition's fetched records, in offset order) return only when every record's fate is final and
durable:

* ``PROCESSED``: the handler succeeded and the store recorded ``(source, id)``;
* ``DUPLICATE``: the store already had ``(source, id)``; the handler was not called;
* ``DEAD_LETTERED``: the record is in the dead-letter topic (acked by Kafka), because it is not a
  canonical event, or the handler raised :class:`RejectEvent`, or it failed ``max_attempts`` times.

Until then it keeps trying: a failing handler is retried with exponential backoff (jittered) and
each failure is counted in the store first, so the count survives a crash and a restarted
consumer does not start again from one. Store and dead-letter-topic outages are retried with the
same backoff without counting against the handler (they are not the event's fault). The caller may
cancel at any await (rebalance, shutdown): nothing is then recorded beyond what already was, and
the record's offset must not be committed.

Batches: with a store that implements :class:`~broker.consumer.store.BatchingStore`, the records
of a batch that have an event key (``source`` and ``id`` in a JSON object) are decided by one
``run_batch`` call (one dedupe lookup and one transaction recording them, see the store); the
handler still runs once per new event, in offset order. Each record is validated into its
:class:`CanonicalEvent` only when its turn comes, and the event is dropped after its handler
(a whole batch of decoded events kept alive made the garbage collector a third of the CPU): a
record whose key is already recorded is a duplicate without being validated, and one that has a
key but is not a canonical event is dead-lettered as undecodable in its place. When
a handler fails in a batch, the records the store did not make final are handled one at a time
by the path above (with the failure already counted), then the rest of the batch goes on as a
batch. A store failure in a batch falls back to that one-at-a-time path for the whole batch.

Pipelining: with a :class:`~broker.consumer.store.PipeliningStore` (SQLite),
:meth:`RecordProcessor.start_batch` returns once the batch's handlers ran and its store write
started; the partition's worker handles its next batch meanwhile and settles this one (waits for
the write, retried after a store failure) before moving its commit offset. Outcomes are observed
and counted only when settled, i.e. final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

import msgspec

from broker.consumer.dlq import DeadLetterSink
from broker.consumer.errors import RejectEvent
from broker.consumer.metrics import ConsumerMetrics, DeadLetterReason
from broker.consumer.records import ConsumedRecord
from broker.consumer.settings import ConsumerSettings
from broker.consumer.store import (
    BatchingStore,
    BatchResult,
    EventKey,
    IdempotencyStore,
    PendingRecord,
    PipeliningStore,
    StopBatch,
)
from broker.events import CanonicalEvent, EventDecodeError, decode_event
from broker.retry import Backoff

log = logging.getLogger(__name__)

TxT = TypeVar("TxT")
_R = TypeVar("_R")

#: ``async def handler(event, tx) -> None``; ``tx`` is the store's transaction (see the store).
Handler: TypeAlias = Callable[[CanonicalEvent, TxT], Awaitable[None]]


def _never() -> bool:
    return False


#: ``settle()`` of :meth:`RecordProcessor.start_batch`: the batch's final outcomes.
Settle: TypeAlias = Callable[[], Awaitable["list[ProcessingOutcome]"]]

#: a pipelined segment whose write is under way: its records, the store's result, the write
_Pending: TypeAlias = tuple[list[ConsumedRecord], BatchResult, PendingRecord]


def _settled(outcomes: list[ProcessingOutcome]) -> Settle:
    async def settle() -> list[ProcessingOutcome]:
        return outcomes

    return settle


class ProcessingOutcome(StrEnum):
    """The final fate of one record (see :mod:`broker.consumer.processor`)."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


Observer: TypeAlias = Callable[[ProcessingOutcome, ConsumedRecord], None]


class _Key(msgspec.Struct):
    """The two members of a record's JSON object that make its idempotency key."""

    source: str
    id: str


#: Reads only ``source`` and ``id`` and skips the rest without building it (~0.8 us for an
#: ~870 B event, where ``orjson.loads`` builds the whole document: ~2 us). Like orjson (which
#: :func:`decode_event` uses), it takes the last of repeated members; work on a record still
#: checks that its validated event has the key the batch used (see ``_work_on``).
_decode_key = msgspec.json.Decoder(_Key).decode


class _Call(Generic[TxT]):
    """Runs the handler once and remembers what it raised (to tell it from store failures)."""

    def __init__(self, handler: Handler[TxT], event: CanonicalEvent) -> None:
        self._handler = handler
        self._event = event
        self.error: BaseException | None = None

    async def __call__(self, tx: TxT) -> None:
        try:
            await self._handler(self._event, tx)
        except Exception as exc:
            self.error = exc
            raise


class _NotBatchable(Exception):
    """Raised by a batch's work on a record that has an event key but must be decided on its
    own: it is not a canonical event after all (the cause is the :class:`EventDecodeError`),
    or its event's ``(source, id)`` differs from the key read for the batch (decided then
    under the event's own key)."""


class RecordProcessor(Generic[TxT]):
    """Decides the fate of one record at a time; one instance is shared by all partitions."""

    def __init__(
        self,
        settings: ConsumerSettings,
        store: IdempotencyStore[TxT],
        handler: Handler[TxT],
        dead_letters: DeadLetterSink,
        metrics: ConsumerMetrics,
        observer: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._handler = handler
        self._dlq = dead_letters
        self._group = settings.group_id
        self._m = metrics
        self._observer = observer
        self._store_failures = 0  # consecutive, for the backoff of store outages
        self._batching = store if isinstance(store, BatchingStore) else None
        self._pipelining = store if isinstance(store, PipeliningStore) else None
        # label children resolved once: a labels() lookup per event is measurable
        self._processed = metrics.processed.labels(self._group)
        self._duplicates = metrics.duplicates_skipped.labels(self._group)
        self._handler_duration = metrics.handler_duration.labels(self._group)
        # doubling from initial_s up to max_s, times a random factor in [0.5, 1] (not in step)
        self._retry = Backoff(settings.retry_backoff_initial_s, settings.retry_backoff_max_s)

    async def process(self, record: ConsumedRecord) -> ProcessingOutcome:
        """Return the record's final outcome (see the module docstring). Cancellable."""
        outcome = await self._decide(record)
        if self._observer is not None:
            self._observer(outcome, record)
        return outcome

    async def process_batch(
        self, records: Sequence[ConsumedRecord], stop: Callable[[], bool] = _never
    ) -> list[ProcessingOutcome]:
        """Decide ``records`` (one partition's, in offset order); return the outcomes, in order,
        of the leading records whose fate is final: all of them, unless ``stop()`` turned true
        (checked before each handler call), then the records before that point.

        The observer sees each outcome, in order, once it is final. Cancellable like
        :meth:`process`; then no record of the batch may be committed.
        """
        settle = await self.start_batch(records, stop)
        return await settle()

    async def start_batch(
        self, records: Sequence[ConsumedRecord], stop: Callable[[], bool] = _never
    ) -> Settle:
        """:meth:`process_batch` in two steps, so that a :class:`PipeliningStore`'s write of
        this batch can run while the caller starts on the next one: returns once every handler
        of the batch ran; awaiting the returned ``settle()`` then waits for the store's write
        (retried after a store failure, see :class:`~broker.consumer.store.PendingRecord`) and
        returns what :meth:`process_batch` returns. The outcomes are final, observed and counted
        only then: none of the batch's records may be committed before ``settle()`` returned.
        Settle batches in the order they were started. Cancelling either step: no record of the
        batch may be committed.
        """
        outcomes: list[ProcessingOutcome] = []
        if self._batching is None:
            for record in records:
                if stop():
                    break
                outcomes.append(await self.process(record))
            return _settled(outcomes)
        segment: list[ConsumedRecord] = []
        keys: list[EventKey] = []
        for record in records:
            key = self._key_of(record)
            if isinstance(key, tuple):
                segment.append(record)
                keys.append(key)
                continue
            done, _ = await self._decide_segment(self._batching, segment, keys, stop)
            outcomes += done
            if len(done) < len(segment) or stop():
                return _settled(outcomes)
            segment, keys = [], []
            outcomes.append(self._observed(record, await self._undecodable(record, key)))
        done, pending = await self._decide_segment(
            self._batching, segment, keys, stop, pipeline=True
        )
        outcomes += done
        if pending is None:
            return _settled(outcomes)
        segment, result, write = pending

        async def settle() -> list[ProcessingOutcome]:
            await self._until_recorded(write)
            return outcomes + self._final(segment, result)

        return settle

    async def _until_recorded(self, write: PendingRecord) -> None:
        """Wait for a pipelined write; after a store failure, back off and write again."""
        while True:
            try:
                await write.wait()
            except Exception as exc:
                await self._store_failed("record", exc)
                continue
            self._store_failures = 0
            return

    def _final(self, segment: list[ConsumedRecord], result: BatchResult) -> list[ProcessingOutcome]:
        """The outcomes of ``segment``'s leading records decided by ``result`` (final now):
        counted and observed."""
        processed = sum(result.ran)
        if processed:
            self._processed.inc(processed)
        if len(result.ran) > processed:
            self._duplicates.inc(len(result.ran) - processed)
        done, duplicate = ProcessingOutcome.PROCESSED, ProcessingOutcome.DUPLICATE
        outcomes = [done if ran else duplicate for ran in result.ran]
        observer = self._observer
        if observer is not None:
            for record, outcome in zip(segment, outcomes, strict=False):
                observer(outcome, record)
        return outcomes

    async def _decide_segment(
        self,
        store: BatchingStore[TxT],
        segment: list[ConsumedRecord],
        keys: list[EventKey],
        stop: Callable[[], bool],
        *,
        pipeline: bool = False,
    ) -> tuple[list[ProcessingOutcome], _Pending | None]:
        """Records with an event key, in order: one ``run_batch``, then one at a time after a
        failure. Returns the outcomes of the leading records decided before ``stop()`` turned
        true. With ``pipeline`` and a :class:`PipeliningStore`, a first ``run_batch`` that
        handled the whole segment returns as soon as its write started: no outcomes, and what
        to settle (``(segment, result, write)``)."""
        outcomes: list[ProcessingOutcome] = []
        pipelining = self._pipelining if pipeline else None
        while segment:
            try:
                if pipelining is not None:
                    result, write = await pipelining.run_batch_pipelined(
                        keys, self._work_on(segment, keys, stop)
                    )
                    pipelining = None
                    if result.error is None and len(result.ran) == len(segment):
                        return outcomes, (segment, result, write)
                    await self._until_recorded(write)
                else:
                    result = await store.run_batch(keys, self._work_on(segment, keys, stop))
            except Exception as exc:  # the store's own failure: decide one at a time
                await self._store_failed("run_batch", exc)
                for record in segment:
                    if stop():
                        break
                    outcomes.append(self._observed(record, await self._decide(record)))
                return outcomes, None
            self._store_failures = 0
            outcomes += self._final(segment, result)
            if result.error is None or result.failed_at is None:
                return outcomes, None  # all of the segment, or what ran before stop()
            failed_at, error = result.failed_at, result.error
            for record in segment[len(result.ran) : failed_at]:  # rolled back: again
                if stop():
                    return outcomes, None
                outcomes.append(self._observed(record, await self._decide(record)))
            record = segment[failed_at]
            outcomes.append(self._observed(record, await self._after_failure(record, error)))
            if stop():
                return outcomes, None
            segment, keys = segment[failed_at + 1 :], keys[failed_at + 1 :]
        return outcomes, None

    def _work_on(
        self, segment: list[ConsumedRecord], keys: list[EventKey], stop: Callable[[], bool]
    ) -> Callable[[int, TxT], Awaitable[None]]:
        """``work(i, tx)`` for ``run_batch``: ``segment[i]`` decoded and handed to the handler,
        timed; raises :class:`StopBatch` instead once ``stop()`` is true, and
        :class:`_NotBatchable` when the record is not a canonical event after all or its event's
        key is not ``keys[i]`` (then the handler is not called).

        Each event lives only while its handler runs: a batch of decoded events kept alive
        together outlived several young-generation collections and the collector became a
        third of the consumer's CPU."""
        handler = self._handler
        observe = self._handler_duration.observe
        perf_counter = time.perf_counter

        async def work(i: int, tx: TxT) -> None:
            if stop():
                raise StopBatch
            try:
                event = decode_event(segment[i].value or b"")
            except EventDecodeError as exc:
                raise _NotBatchable from exc
            source, id_ = keys[i]
            if event.id != id_ or event.source != source:
                raise _NotBatchable
            started = perf_counter()
            await handler(event, tx)
            observe(perf_counter() - started)

        return work

    def _observed(self, record: ConsumedRecord, outcome: ProcessingOutcome) -> ProcessingOutcome:
        if self._observer is not None:
            self._observer(outcome, record)
        return outcome

    def _key_of(self, record: ConsumedRecord) -> EventKey | EventDecodeError:
        """The record's ``(source, id)`` from its JSON alone (the event itself is validated when
        it is handled, see :meth:`_work_on`), or why it is not a canonical event."""
        if record.value is not None:
            try:
                key = _decode_key(record.value)
            except msgspec.DecodeError:
                key = None
            if key is not None and key.source and key.id:
                return (key.source, key.id)
        event = self._decode(record)  # for the reason (or the key, should the rules differ)
        return event.idempotency_key if isinstance(event, CanonicalEvent) else event

    def _decode(self, record: ConsumedRecord) -> CanonicalEvent | EventDecodeError:
        """The record's event, or why it is not a canonical event."""
        if record.value is None:
            return EventDecodeError("record has no value (tombstone)")
        try:
            return decode_event(record.value)
        except EventDecodeError as exc:
            return exc

    async def _undecodable(
        self, record: ConsumedRecord, exc: EventDecodeError
    ) -> ProcessingOutcome:
        log.warning(
            "undecodable record %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
        )
        await self._dead_letter(record, DeadLetterReason.UNDECODABLE, str(exc), 0)
        return ProcessingOutcome.DEAD_LETTERED

    async def _after_failure(self, record: ConsumedRecord, exc: Exception) -> ProcessingOutcome:
        """The work on ``record`` raised ``exc`` inside a batch: an undecodable record goes to
        the dead-letter topic, one whose key was misread is decided under its event's key; a
        handler failure is counted like one of the one-at-a-time path,
        which goes on from there."""
        event = self._decode(record)
        if isinstance(exc, _NotBatchable) or not isinstance(event, CanonicalEvent):
            return await self._decide(record)
        if isinstance(exc, RejectEvent):
            self._m.handler_errors.labels(self._group).inc()
            await self._dead_letter(record, DeadLetterReason.REJECTED, exc.detail, 1)
            return ProcessingOutcome.DEAD_LETTERED
        if await self._handler_failed(record, event.idempotency_key, exc):
            return ProcessingOutcome.DEAD_LETTERED
        return await self._run(record, event, failed_here=True)

    async def _decide(self, record: ConsumedRecord) -> ProcessingOutcome:
        event = self._decode(record)
        if not isinstance(event, CanonicalEvent):
            return await self._undecodable(record, event)
        return await self._run(record, event)

    async def _run(
        self, record: ConsumedRecord, event: CanonicalEvent, *, failed_here: bool = False
    ) -> ProcessingOutcome:
        """The one-at-a-time path: ``run_once`` until the record's fate is final."""
        key = event.idempotency_key
        while True:
            call = _Call(self._handler, event)
            started = time.perf_counter()
            try:
                done = await self._store.run_once(key, call)
            except Exception as exc:
                if call.error is not exc:
                    await self._store_failed("run_once", exc)
                    continue
                if isinstance(exc, RejectEvent):
                    self._m.handler_errors.labels(self._group).inc()
                    await self._dead_letter(record, DeadLetterReason.REJECTED, exc.detail, 1)
                    return ProcessingOutcome.DEAD_LETTERED
                failed_here = True
                if await self._handler_failed(record, key, exc):
                    return ProcessingOutcome.DEAD_LETTERED
                continue
            self._store_failures = 0
            if not done:
                self._duplicates.inc()
                return ProcessingOutcome.DUPLICATE
            self._handler_duration.observe(time.perf_counter() - started)
            self._processed.inc()
            if failed_here:
                await self._with_store_retry("clear_failures", self._store.clear_failures, key)
            return ProcessingOutcome.PROCESSED

    async def _handler_failed(self, record: ConsumedRecord, key: EventKey, exc: Exception) -> bool:
        """Count the failure durably; dead-letter at ``max_attempts`` (True) or back off (False)."""
        self._m.handler_errors.labels(self._group).inc()
        attempts = await self._with_store_retry("record_failure", self._store.record_failure, key)
        detail = f"{type(exc).__name__}: {exc}"
        if attempts >= self._settings.max_attempts:
            log.error(
                "handler failed %d times on %s/%s (%s[%d]@%d); dead-lettering: %s",
                attempts, *key, record.topic, record.partition, record.offset, detail,
            )  # fmt: skip
            await self._dead_letter(record, DeadLetterReason.HANDLER_FAILED, detail, attempts)
            await self._with_store_retry("clear_failures", self._store.clear_failures, key)
            return True
        delay = self._backoff(attempts)
        log.warning(
            "handler failed on %s/%s (attempt %d of %d), retrying in %.2fs: %s",
            *key, attempts, self._settings.max_attempts, delay, detail,
        )  # fmt: skip
        await asyncio.sleep(delay)
        return False

    async def _dead_letter(
        self, record: ConsumedRecord, reason: DeadLetterReason, detail: str, attempts: int
    ) -> None:
        failures = 0
        while True:
            try:
                await self._dlq.send(record, reason=reason, detail=detail, attempts=attempts)
            except Exception as exc:
                failures += 1
                delay = self._backoff(failures)
                log.error("dead-letter write failed (%r); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._m.dead_lettered.labels(self._group, reason.value).inc()
            return

    async def _with_store_retry(
        self, what: str, op: Callable[[EventKey], Awaitable[_R]], key: EventKey
    ) -> _R:
        while True:
            try:
                result = await op(key)
            except Exception as exc:
                await self._store_failed(what, exc)
                continue
            self._store_failures = 0
            return result

    async def _store_failed(self, what: str, exc: Exception) -> None:
        self._m.store_errors.labels(self._group).inc()
        self._store_failures += 1
        delay = self._backoff(min(self._store_failures, 10))
        log.error("dedupe store failed in %s (%r); retrying in %.2fs", what, exc, delay)
        await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return self._retry.delay(attempt)
