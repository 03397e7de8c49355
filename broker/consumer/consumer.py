"""The idempotent consumer: canonical events from Kafka to a handler, once per (source, id).

Guarantees (with the store's own guarantee, see each store):

* **Commit after success.** A partition's offset is committed only past records whose fate is final
  (handler succeeded and id recorded, duplicate skipped, or dead-lettered with the DLQ write acked).
  Anything after the last committed offset is read again by whoever owns the partition next.
* **Duplicates skipped.** An event whose ``(source, id)`` is in the store is not handed to the
  handler again; it is counted in ``mdm_broker_consumer_duplicates_skipped_total``.
* **Failing handlers.** Retried with exponential backoff; failures are counted in the store (so a
  restart does not reset them); after ``max_attempts`` the record goes, unchanged, to the
  dead-letter topic and the partition goes on. Undecodable records go there at once (with a
  batching store, a record that carries the ``(source, id)`` of a recorded event is skipped as its
  duplicate without further validation). Nothing is dropped silently.
* **Order.** One partition's records are handled one at a time in offset order (the broker keys
  one entity's events to one partition); partitions are handled concurrently. Each partition's
  fetched records are decided in batches (``max_batch_records``): one dedupe lookup and one store
  transaction per batch; the batch's offsets are committed once all its records are final.
* **Rebalances.** When partitions are revoked, their workers finish the in-flight record (bounded
  by ``revoke_timeout_s``, then abandoned: cancelled and its batch not committed), the rest of its
  batch and queued records are dropped, and the final offsets are committed before the partitions
  are released. A consumer that lost its membership without knowing (a zombie) can still run a
  handler concurrently with the new owner: :class:`PostgresStore` serializes those on the id row,
  so the effect still happens once.
* **Stop.** :meth:`IdempotentConsumer.stop` does the same as a revocation for every partition, then
  leaves the group and closes the store.

Signals are not handled here: the caller sets the ``stop`` event passed to :meth:`run_until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from broker.consumer.dlq import KafkaDeadLetterSink
from broker.consumer.errors import ConsumerError, StoreError
from broker.consumer.metrics import ConsumerMetrics
from broker.consumer.partitions import PartitionWorker
from broker.consumer.processor import Handler, Observer, RecordProcessor
from broker.consumer.records import ConsumedRecord
from broker.consumer.settings import ConsumerSettings
from broker.consumer.store import IdempotencyStore
from broker.kafka_diagnosis import capture_aiokafka_errors, diagnose, stop_client
from broker.kafka_security import client_kwargs
from broker.lifecycle import AsyncService, Lifecycle, LifecycleState

log = logging.getLogger(__name__)

TxT = TypeVar("TxT")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: IdempotentConsumer[Any]) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner._on_assigned(list(assigned))


class IdempotentConsumer(AsyncService, Generic[TxT]):
    """Consume canonical events and call ``handler(event, tx)`` once per ``(source, id)``.

    ``tx`` is what the store gives: an asyncpg connection in the open transaction that also records
    the id (:class:`PostgresStore`), or ``None`` (:class:`SQLiteStore`, :class:`InMemoryStore`).
    Metrics are declared in ``registry`` (default: a private one). ``observer`` (optional) is
    called synchronously with each record's final outcome, before its offset can be committed.

    The consumer owns ``store``: it opens it on :meth:`start` and closes it on :meth:`stop`.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        store: IdempotencyStore[TxT],
        handler: Handler[TxT],
        *,
        registry: CollectorRegistry | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = ConsumerMetrics.for_registry(
            registry if registry is not None else CollectorRegistry()
        )
        self._dlq = KafkaDeadLetterSink(
            bootstrap_servers=settings.bootstrap_servers,
            topic=settings.effective_dlq_topic,
            group=settings.group_id,
            client_id=settings.client_id,
            timeout_s=settings.dlq_publish_timeout_s,
            security=settings.security,
        )
        self._processor = RecordProcessor(
            settings, store, handler, self._dlq, self._metrics, observer
        )
        self._kafka: Any = None
        self._workers: dict[TopicPartition, PartitionWorker] = {}
        self._paused: set[TopicPartition] = set()
        self._commit_lock = asyncio.Lock()
        self._purge_task: asyncio.Task[None] | None = None
        self.lifecycle = Lifecycle("IdempotentConsumer", retry_failed_start=True)

    @property
    def metrics(self) -> ConsumerMetrics:
        return self._metrics

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, start the DLQ producer and join the group. Idempotent.

        A start that fails raises :class:`ConsumerError` naming the cause (Kafka unreachable,
        credentials, TLS, a store error) and closes what it opened (no client or task is left);
        ``start()`` can then be retried on the same consumer once the cause is fixed. A stopped
        consumer cannot be started again.
        """
        if self.lifecycle.state is LifecycleState.STOPPED:
            raise ConsumerError("a stopped IdempotentConsumer cannot be restarted; make a new one")
        await self.lifecycle.start(self._start, undo=self._close_resources)

    async def _start(self) -> None:
        s = self._settings
        await self._store.open()
        with capture_aiokafka_errors() as lines:
            try:
                await self._start_kafka()
            except (KafkaError, OSError, TimeoutError, ConsumerError) as exc:
                cause = exc.__cause__ if isinstance(exc, ConsumerError) and exc.__cause__ else exc
                diagnosis = diagnose(
                    cause, lines, s.security.ssl_cert_file, "security.ssl_cert_file"
                )
                reason = diagnosis.summary_for("security.", "bootstrap_servers")
                raise ConsumerError(f"cannot start consumer of {s.topic}: {reason}") from exc

    async def _start_kafka(self) -> None:
        """Start the DLQ producer and join the group (raises KafkaError, OSError, TimeoutError
        or ConsumerError)."""
        s = self._settings
        await self._dlq.start()
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            max_poll_interval_ms=int(s.max_poll_interval_s * 1000),
            fetch_max_wait_ms=int(s.fetch_max_wait_s * 1000),
            request_timeout_ms=int(s.request_timeout_s * 1000),
            **client_kwargs(s.security),
        )
        self._kafka.subscribe([s.topic], listener=_Listener(self))
        await asyncio.wait_for(self._kafka.start(), s.request_timeout_s)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Start if needed, consume until ``stop`` is set, then :meth:`stop`.

        Raises :class:`ConsumerError` (after stopping cleanly) when a partition worker crashed.
        """
        await self.start()
        try:
            await self._loop(stop)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Finish in-flight records (bounded), commit, leave the group, close store. Idempotent;
        safe after a failed start (nothing is left to close)."""
        await self.lifecycle.stop(self._stop)

    async def _stop(self) -> None:
        workers = list(self._workers.items())
        await asyncio.gather(*(w.finish(self._settings.revoke_timeout_s) for _, w in workers))
        await self._commit([tp for tp, _ in workers])
        self._workers.clear()
        await self._close_resources()

    async def _close_resources(self) -> None:
        purge, self._purge_task = self._purge_task, None
        if purge is not None:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            try:
                await asyncio.wait_for(stop_client(kafka), self._settings.request_timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("Kafka consumer did not close cleanly: %r", exc)
        await self._dlq.stop()
        with contextlib.suppress(StoreError):
            await self._store.close()

    # -- main loop ---------------------------------------------------------------------------

    async def _loop(self, stop: asyncio.Event) -> None:
        s = self._settings
        poll_ms = int(s.poll_timeout_s * 1000)
        next_commit = time.monotonic() + s.commit_interval_s
        next_purge = time.monotonic()
        while not stop.is_set():
            self._raise_if_worker_failed()
            try:
                batch = await self._kafka.getmany(timeout_ms=poll_ms)
            except KafkaError as exc:
                raise ConsumerError(f"cannot read {s.topic}: {exc!r}") from exc
            for tp, records in batch.items():
                worker = self._workers.get(tp)
                if worker is not None:  # else: revoked meanwhile; the next owner reads them
                    worker.enqueue([_convert(r) for r in records])
            self._apply_backpressure()
            now = time.monotonic()
            if now >= next_commit:
                await self._commit(list(self._workers))
                self._update_lag()
                next_commit = now + s.commit_interval_s
            if now >= next_purge and (self._purge_task is None or self._purge_task.done()):
                # in the background: a large purge must not delay fetching or commits
                self._purge_task = asyncio.create_task(self._purge(), name="consumer-store-purge")
                next_purge = now + s.purge_interval_s
        self._raise_if_worker_failed()

    def _raise_if_worker_failed(self) -> None:
        for tp, worker in self._workers.items():
            failure = worker.failure
            if failure is not None:
                raise ConsumerError(
                    f"worker of {tp.topic}[{tp.partition}] crashed: {failure!r}"
                ) from failure

    def _apply_backpressure(self) -> None:
        limit = self._settings.max_buffered_per_partition
        for tp, worker in self._workers.items():
            if tp not in self._paused and worker.buffered >= limit:
                self._kafka.pause(tp)
                self._paused.add(tp)
            elif tp in self._paused and worker.buffered <= limit // 2:
                self._kafka.resume(tp)
                self._paused.discard(tp)

    def _maybe_resume(self, worker: PartitionWorker) -> None:
        """Resume a paused partition as soon as its worker drained to half the limit (waiting
        for the next poll would leave the worker idle for up to ``poll_timeout_s``)."""
        tp = TopicPartition(worker.topic, worker.partition)
        if tp in self._paused and worker.buffered <= self._settings.max_buffered_per_partition // 2:
            if self._kafka is not None and self._workers.get(tp) is worker:
                self._kafka.resume(tp)
            self._paused.discard(tp)

    async def _commit(self, partitions: list[TopicPartition]) -> None:
        """Commit the final-fate offsets of ``partitions`` that moved. Failures are logged: the
        offsets stay uncommitted and the records are deduplicated when read again."""
        if self._kafka is None:
            return
        async with self._commit_lock:
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp in partitions:
                worker = self._workers.get(tp)
                if worker is None or worker.commit_offset is None:
                    continue
                if worker.commit_offset != worker.committed:
                    offsets[tp] = OffsetAndMetadata(worker.commit_offset, "")
            if not offsets:
                return
            try:
                await self._kafka.commit(offsets)
            except KafkaError as exc:
                log.warning("offset commit failed (records will be re-read and deduped): %r", exc)
                return
            for tp, meta in offsets.items():
                worker = self._workers.get(tp)
                if worker is not None:
                    worker.committed = meta.offset

    def _update_lag(self) -> None:
        lag = 0
        for tp, worker in self._workers.items():
            high = self._kafka.highwater(tp)
            position = worker.next_to_process
            if high is not None and position is not None:
                lag += max(0, high - position)
        self._metrics.lag.labels(self._settings.group_id).set(lag)

    async def _purge(self) -> None:
        try:
            purged = await self._store.purge_expired()
        except Exception as exc:  # a custom store's error must not kill the background task
            self._metrics.store_errors.labels(self._settings.group_id).inc()
            log.warning("store purge failed (retried in purge_interval_s): %r", exc)
            return
        if purged:
            log.info("store forgot %d entries older than its retention", purged)

    # -- rebalance -----------------------------------------------------------------------------

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        mine = [tp for tp in revoked if tp in self._workers]
        await asyncio.gather(
            *(self._workers[tp].finish(self._settings.revoke_timeout_s) for tp in mine)
        )
        await self._commit(mine)
        for tp in mine:
            self._workers.pop(tp, None)
            self._paused.discard(tp)
        log.info("partitions revoked: %s", _names(mine))

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            if tp in self._workers:
                continue
            worker = PartitionWorker(
                tp.topic,
                tp.partition,
                self._processor,
                max_batch=self._settings.max_batch_records,
                on_taken=self._maybe_resume,
            )
            worker.start()
            self._workers[tp] = worker
        log.info("partitions assigned: %s", _names(assigned))


_make_record = ConsumedRecord._make


def _convert(record: Any) -> ConsumedRecord:
    # ``_make`` from a tuple in field order: a third of the keyword constructor's cost (one
    # record is converted per consumed event)
    headers = record.headers
    return _make_record(
        (
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(headers) if headers else (),
            record.timestamp or 0,
        )
    )


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"
