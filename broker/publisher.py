"""Kafka publisher: the only place that writes canonical events, dead letters and state records.

Guarantees of :meth:`KafkaPublisher.publish`:

* It returns only after **every** record of the call was acknowledged by Kafka with ``acks=all``
  (idempotent producer, so producer retries never duplicate a record inside one session).
* Otherwise it raises :class:`~broker.errors.PublishError` within ``publish_timeout_s`` (aiokafka
  alone may wait forever while Kafka is down). Some records may still reach Kafka later: callers
  must not acknowledge the vendor, and the deterministic event ids make the later redelivery a
  harmless duplicate for the idempotent consumer.
* :class:`~broker.errors.RecordRejectedError` (a ``PublishError`` with ``retriable=False``) means
  Kafka can never take one of the records (too large, invalid, not serializable): the caller
  dead-letters the input. Records larger than ``max_request_bytes`` (or the topic's limit, when
  known) are refused before anything is sent.
* Records are keyed by ``partitionkey``; records of one key keep their order within one call
  (one partition, idempotent producer with in-flight ordering).
* Concurrent calls are coalesced: the records of every call made in one event-loop turn (e.g.
  the webhook requests that arrived together) are handed to aiokafka by one flush, in call
  order, under one deadline, and each call still gets the outcome of its own records only
  (another call's rejected record, or a record that send() refused, never fails it). A call
  cancelled before its flush ran sends nothing.

Failures are classified by :mod:`broker.kafka_errors`. Only *transient* failures (timeouts,
broker down, leader changes) mark Kafka health failed; a success or the background metadata
probe marks it healthy again. A record-fatal or producer-fatal failure leaves health alone. When
the idempotent session may be broken (producer-fatal error, a batch the broker rejected, or an
ambiguous timeout with records in flight), the producer is **recreated** before the next write:
the old one is given ``publish_timeout_s`` to flush what it still holds, then abandoned.

:meth:`dead_letter` never fails for size: a payload that cannot fit is stored truncated, with
``dlq-original-size`` and ``dlq-original-sha256`` headers and an ERROR log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from broker.errors import NotStartedError, PublishError, RecordRejectedError
from broker.events import KAFKA_HEADERS, CanonicalEvent, encode_event
from broker.health import KafkaHealth
from broker.kafka_diagnosis import capture_aiokafka_errors, diagnose
from broker.kafka_errors import Classified, Failure, RecordRejectReason, breaks_session, classify
from broker.kafka_refusals import WriteRefusals, is_refusal
from broker.kafka_security import client_kwargs
from broker.lifecycle import AsyncService, Lifecycle
from broker.metrics import BrokerMetrics
from broker.supervisor import SupervisedTask, Supervisor
from broker.topics import fetch_max_message_bytes

if TYPE_CHECKING:
    from broker.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes | None, bytes | None, Headers]
"""(topic, key, value, headers) of one Kafka record."""

DLQ_FALLBACK_LIMITS_BYTES = (1_000_000, 65_536)
"""Sizes a dead letter is cut to, in turn, if Kafka still rejects it as too large (a topic whose
``max.message.bytes`` is below ``max_request_bytes``): the broker default (1 MiB) minus margin,
then a size every Kafka accepts."""

_ABANDON_GRACE_S = 0.2
"""How long an abandoned producer's sender task may take to finish after being cancelled."""

_ABANDON_RESERVE_S = 3 * _ABANDON_GRACE_S
"""Part of a stop() budget kept for abandoning what could not be flushed in the rest of it."""


@dataclass(frozen=True)
class FlushReport:
    """What :meth:`KafkaPublisher.stop` could not hand to Kafka before its deadline."""

    complete: bool
    unflushed_records: int


class _Call:
    """One caller's records in a flush (see :meth:`KafkaPublisher._send_all`) and its outcome:
    None once every record was acked, else the exception the caller raises."""

    __slots__ = ("futures", "label", "outcome", "records", "started")

    def __init__(
        self,
        records: Sequence[Record],
        label: str,
        started: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.records = records
        self.label = label
        self.started = started
        self.futures: list[asyncio.Future[Any]] = []  # aiokafka's, one per record enqueued
        self.outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def settle(self, error: BaseException | None) -> None:
        """Set the outcome unless it is set already (or the caller was cancelled)."""
        if not self.outcome.done():
            self.outcome.set_result(error)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Upper bound of the bytes one record takes in a Kafka batch (aiokafka's own estimate,
    batch header included): the number Kafka compares with ``max.message.bytes``."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


_MURMUR_M = 0x5BD1E995
_U32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of a record key (Java ``Utils.murmur2``, as unsigned 32 bits): the
    same value as ``aiokafka.partitioner.murmur2``, about twice as fast (the 4-byte words are
    unpacked at once instead of byte by byte)."""
    length = len(data)
    h = 0x9747B28C ^ length
    for word in struct.unpack_from(f"<{length // 4}I", data):
        k = (word * _MURMUR_M) & _U32
        k = ((k ^ (k >> 24)) * _MURMUR_M) & _U32
        h = ((h * _MURMUR_M) & _U32) ^ k
    tail = length & ~3
    extra = length - tail
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h = ((h ^ data[tail]) * _MURMUR_M) & _U32
    h ^= h >> 13
    h = (h * _MURMUR_M) & _U32
    return h ^ (h >> 15)


class _KeyPartitions:
    """Each key's partition exactly as the producer's default partitioner picks it (murmur2 of
    the key over the topic's partitions), computed once per key while the topic's partitions stay
    the same: aiokafka's murmur2 is pure Python and was a sixth of the publish path's CPU (a key
    seen for the first time goes through the faster :func:`murmur2` above).

    Only keyed records are memoised (an unkeyed record is left to aiokafka); at most
    ``max_keys`` keys per topic are kept, then the memo starts afresh.
    """

    def __init__(self, max_keys: int = 65_536) -> None:
        self._max_keys = max_keys
        self._topics: dict[str, tuple[set[int], dict[bytes, int]]] = {}

    def chooser(self, producer: Any) -> Callable[[str, bytes | None], int | None]:
        """``partition_of(topic, key)`` for one call: the partition to send to, or None (let
        aiokafka choose: no key, or the topic's metadata is not known yet)."""
        cluster = producer.client.cluster
        per_topic: dict[str, tuple[list[int], dict[bytes, int]]] = {}

        def partition_of(topic: str, key: bytes | None) -> int | None:
            if key is None:
                return None
            known = per_topic.get(topic)
            if known is None:
                known = self._memo(cluster, topic)
                if known is None:  # asked again for the next record: send() fetches metadata
                    return None
                per_topic[topic] = known
            ordered, memo = known
            partition = memo.get(key)
            if partition is None:  # aiokafka's DefaultPartitioner for a keyed record:
                partition = memo[key] = ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]
            return partition

        return partition_of

    def _memo(self, cluster: Any, topic: str) -> tuple[list[int], dict[bytes, int]] | None:
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        known = self._topics.get(topic)
        if known is None or known[0] != partitions or len(known[1]) >= self._max_keys:
            known = self._topics[topic] = (partitions, {})
        return list(partitions), known[1]  # the list aiokafka's own _partition() passes


class KafkaPublisher(AsyncService):
    """aiokafka producer with acks=all, idempotence, explicit linger/batch and bounded waits.
    ``async with`` starts and stops it; dropped while running it warns (``ResourceWarning``)."""

    def __init__(
        self,
        settings: KafkaSettings,
        health: KafkaHealth,
        metrics: BrokerMetrics,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._settings = settings
        self._health = health
        self._metrics = metrics
        self._supervisor = supervisor or Supervisor()  # standalone use: its own registry
        self._producer: Any = None
        self._generation = 0
        self._reset_reason: str | None = None
        self._reset_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[bool]] = set()
        self._in_flight = 0
        self._abandoned = 0
        self._topic_limits: dict[str, int] = {}
        self.lifecycle = Lifecycle("KafkaPublisher", retry_failed_start=True)
        self._probe_task: SupervisedTask | None = None
        self._refusals = WriteRefusals(health, metrics)
        self._partitions = _KeyPartitions()
        self._pending: list[_Call] = []  # calls of this loop turn, not yet handed to a flush
        self._flushes: set[asyncio.Future[None]] = set()
        # Prometheus children resolved once per label set (labels() per event is measurable)
        self._published: dict[tuple[str, str], Any] = {}
        self._latency_ok: dict[str, Any] = {}

    @property
    def settings(self) -> KafkaSettings:
        return self._settings

    @property
    def health(self) -> KafkaHealth:
        return self._health

    @property
    def producer_generation(self) -> int:
        """How many producers (idempotent sessions) this publisher has started; 1 after start."""
        return self._generation

    def set_topic_limit(self, topic: str, max_message_bytes: int) -> None:
        """Record a topic's ``max.message.bytes`` (read at start-up) so the size pre-check
        refuses what the topic would refuse, even when it is below ``max_request_bytes``."""
        self._topic_limits[topic] = max_message_bytes

    def record_limit(self, topic: str) -> int:
        """The largest record (as :func:`record_size` counts) accepted for ``topic``."""
        return min(self._settings.max_request_bytes, self._topic_limits.get(topic, 1 << 62))

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Kafka. Idempotent (see :mod:`broker.lifecycle`).

        Raises :class:`PublishError` naming the cause (unreachable, credentials, TLS) if Kafka
        cannot be reached within ``request_timeout_s``; nothing is left open then, and ``start()``
        can be retried on the same publisher once the cause is fixed. A stopped publisher cannot
        be started again (:class:`NotStartedError`).
        """
        await self.lifecycle.start(self._start)

    async def _start(self) -> None:
        self._producer = await self._start_producer()
        self._generation = 1
        self._probe_task = self._supervisor.spawn("kafka-health-probe", self._probe_loop)

    async def stop(self, timeout_s: float | None = None) -> FlushReport:
        """Flush buffered records and close, all within ``timeout_s`` (default
        ``publish_timeout_s``; the flush gets all of it but the last 0.6 s, kept for abandoning
        a producer Kafka does not answer). Idempotent; waits for a ``start()`` in progress.

        Whatever Kafka has not acked by then is abandoned (its callers got, or will get,
        ``PublishError``, so no vendor was acknowledged for it); the count is logged and returned.
        """
        report = FlushReport(complete=True, unflushed_records=0)

        async def close() -> None:
            nonlocal report
            report = await self._close(timeout_s)

        await self.lifecycle.stop(close)
        return report

    async def _close(self, timeout_s: float | None) -> FlushReport:
        budget = self._settings.publish_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, budget - _ABANDON_RESERVE_S)
        if self._probe_task is not None:
            await self._probe_task.stop(0)  # the probe only sleeps and reads metadata: cancel it
        abandoned_before = self._abandoned
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close_producer(producer, max(0.0, deadline - time.monotonic()))
        if self._flushes:  # their records were flushed or abandoned above: they end at once
            await asyncio.wait(self._flushes, timeout=max(0.0, deadline - time.monotonic()))
        if self._retiring:
            _, pending = await asyncio.wait(
                self._retiring, timeout=max(0.0, deadline - time.monotonic())
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_ABANDON_GRACE_S)
        self._retiring.clear()
        unflushed = self._abandoned - abandoned_before + self._in_flight
        if unflushed:
            log.error(
                "kafka producer closed with %d record(s) not acked (their vendors were not "
                "acknowledged and will redeliver)",
                unflushed,
            )
        else:
            log.info("kafka producer flushed and closed")
        return FlushReport(complete=unflushed == 0, unflushed_records=unflushed)

    # -- writing -------------------------------------------------------------------------------

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        """Write ``events`` to the events topic and wait for every ack (see module docstring)."""
        if not events:
            return
        topic = self._settings.events_topic
        records: list[Record] = []
        counts: dict[tuple[str, str], int] = {}
        for index, event in enumerate(events):  # one pass: encode, key, metric labels
            labels = (event.vendor.value, event.type.value)
            try:
                value = encode_event(event)
            except (TypeError, ValueError) as exc:
                self._rejected(RecordRejectReason.SERIALIZATION, labels[0])
                raise RecordRejectedError(
                    RecordRejectReason.SERIALIZATION, f"event {index}: {exc}", (index,)
                ) from exc
            records.append((topic, event.partitionkey.encode(), value, KAFKA_HEADERS))
            counts[labels] = counts.get(labels, 0) + 1
        vendors = {vendor for vendor, _ in counts}
        await self._send_all(records, vendors.pop() if len(vendors) == 1 else "mixed")
        for labels, count in counts.items():
            child = self._published.get(labels)
            if child is None:
                child = self._published[labels] = self._metrics.events_published.labels(*labels)
            child.inc(count)

    async def dead_letter(
        self,
        payload: bytes,
        *,
        vendor: str,
        reason: str,
        detail: str = "",
        tenant: str = "",
        content_type: str = "application/octet-stream",
        context: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write authenticated-but-unusable input, unchanged, to the DLQ topic; wait for the ack.

        Headers carry ``dlq-reason``, ``dlq-detail`` (truncated to 1 KiB), ``vendor``, ``tenant``,
        ``content-type``, ``received-at`` (epoch ms) and the ``context`` pairs (what the vendor's
        replay needs besides the raw input, e.g. Kapua's polling context). Raises
        :class:`PublishError` like publish when Kafka cannot take it now, but never for size: a
        payload too large for the DLQ topic is stored cut to fit, with ``dlq-truncated: true``,
        ``dlq-original-size`` (bytes) and ``dlq-original-sha256`` (hex) headers, and logged at
        ERROR.
        """
        headers: Headers = [
            ("dlq-reason", reason.encode()),
            ("dlq-detail", detail[:1024].encode(errors="replace")),
            ("vendor", vendor.encode()),
            ("tenant", tenant.encode()),
            ("content-type", content_type.encode()),
            ("received-at", str(int(time.time() * 1000)).encode()),
            *((name, value.encode()) for name, value in context),
        ]
        key = f"{vendor}:{tenant}".encode()
        topic = self._settings.dlq_topic
        limits = [self.record_limit(topic)]
        limits += [limit for limit in DLQ_FALLBACK_LIMITS_BYTES if limit < limits[0]]
        for attempt, candidate in enumerate(limits):
            limit = min(candidate, self.record_limit(topic))  # it may have been learnt meanwhile
            value, record_headers = _fit_dead_letter(key, payload, headers, limit)
            if value is not payload:
                self._metrics.dead_letters_truncated.labels(vendor).inc()
                log.error(
                    "DEAD LETTER TRUNCATED: vendor=%s tenant=%r reason=%s: %d bytes do not fit "
                    "the %d-byte record limit of %s; stored the first %d bytes with the original "
                    "size and SHA-256 in headers",
                    vendor,
                    tenant,
                    reason,
                    len(payload),
                    limit,
                    topic,
                    len(value),
                )
            try:
                await self._send_all([(topic, key, value, record_headers)], vendor)
            except RecordRejectedError:
                if attempt == len(limits) - 1:
                    raise
                continue
            break
        self._metrics.dead_lettered.labels(vendor, reason).inc()

    async def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Write one record (e.g. a state-topic entry; ``value=None`` is a tombstone), acked."""
        await self._send_all([(topic, key, value, list(headers))], "state")

    async def _send_all(self, records: Sequence[Record], label: str) -> None:
        """Send ``records`` and wait for every ack; ``label`` is the metrics vendor.

        The records of every call made in the same event-loop turn (e.g. the webhook requests
        that arrived together) are handed to aiokafka together by one flush task (see
        :meth:`_flush`), which then gives each call the outcome of its own records only.

        Bounds: the flush, including recreating a broken producer first, takes at most
        ``publish_timeout_s`` (one ``asyncio.timeout``); a record larger than
        :meth:`record_limit` is refused before anything is sent. Raises
        :class:`RecordRejectedError` when every failure was record-fatal, else
        :class:`PublishError` (retriable).
        """
        if not self.lifecycle.running:
            raise NotStartedError(f"publisher is {self.lifecycle.state.value}, not running")
        self._check_sizes(records, label)
        call = _Call(records, label, time.perf_counter(), asyncio.get_running_loop())
        self._pending.append(call)
        if len(self._pending) == 1:  # the first call of this turn starts the flush of them all
            task = asyncio.ensure_future(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        error = await call.outcome
        if error is not None:
            raise error

    async def _flush(self) -> None:
        """Send the records of every call pending now and settle each call's outcome.

        Runs one loop turn after the first of them was made, so all calls of that turn are in
        it. Whatever happens, every call's outcome is set before this returns: no caller is
        left waiting.
        """
        calls, self._pending = self._pending, []
        try:
            await self._send_calls(calls)
        except BaseException as exc:  # a bug or a cancellation must not strand the callers
            for call in calls:
                call.settle(exc if isinstance(exc, Exception) else PublishError(repr(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _send_calls(self, calls: list[_Call]) -> None:
        """Enqueue the records of ``calls`` in order, then answer each call in that order as
        soon as its records are done (records complete about in the order they were enqueued;
        one partition's batches always do)."""
        generation = self._generation
        refused: dict[int, Exception] = {}  # call -> what send() raised for one of its records
        sent = False
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                producer, generation = await self._producer_for_send()
                send, partition_of = producer.send, self._partitions.chooser(producer)
                for index, call in enumerate(calls):
                    if call.outcome.done():  # its caller was cancelled: nothing of it is sent
                        continue
                    futures = call.futures
                    for topic, key, value, headers in call.records:
                        partition = partition_of(topic, key)
                        try:
                            future = await send(
                                topic, value=value, key=key, partition=partition, headers=headers
                            )
                        except Exception as exc:  # refused before enqueueing: this call only
                            refused[index] = exc
                            break
                        futures.append(future)
                        self._in_flight += 1
                        sent = True
                for index, call in enumerate(calls):
                    if index in refused or call.outcome.done():
                        continue
                    await _settled(call.futures)
                    if not _failures(call.futures):
                        self._succeeded(call)
        except TimeoutError as exc:
            # Ambiguous: records may be in flight or written. The session's state is unknown.
            if sent:
                self._request_reset(generation, "ambiguous_timeout")
            for index, call in enumerate(calls):
                if index in refused or call.outcome.done() or _answered(call):
                    continue  # (an answered call's failures are classified below)
                self._failed(Classified(Failure.TRANSIENT, "timeout"), call.started, call.label)
                error = PublishError(
                    f"Kafka did not ack {len(call.records)} record(s) within "
                    f"{self._settings.publish_timeout_s}s"
                )
                error.__cause__ = exc
                call.settle(error)
        finally:
            for call in calls:
                self._release(call.futures)
        for index, call in enumerate(calls):  # the failed ones: classify, isolate, reset
            if call.outcome.done():
                continue
            if index in refused:
                refusal = refused[index]
                if not isinstance(refusal, kafka_errors.KafkaError | OSError):
                    call.settle(refusal)  # not Kafka's answer (a bug): the caller sees it as is
                    continue
                self._note_refusal(call.records, [(i, refusal) for i in range(len(call.records))])
                call.settle(self._error_for([(0, refusal)], call, generation, reached_broker=False))
                continue
            failures = _failures(call.futures)
            self._note_refusal(call.records, failures)
            culprits = await self._too_large_culprits(call.records, failures)
            call.settle(
                self._error_for(failures, call, generation, reached_broker=True, culprits=culprits)
            )

    def _succeeded(self, call: _Call) -> None:
        """Every record of ``call`` was acked: count it, mark Kafka healthy, answer the caller."""
        latency = self._latency_ok.get(call.label)
        if latency is None:
            latency = self._latency_ok[call.label] = self._metrics.publish_latency.labels(
                call.label, "ok"
            )
        latency.observe(time.perf_counter() - call.started)
        if self._refusals.active:
            self._refusals.wrote({topic for topic, *_ in call.records})
        if not self._refusals.active:
            self._health.mark_healthy()
            self._metrics.kafka_healthy.set(1)
        call.settle(None)

    def _note_refusal(
        self, records: Sequence[Record], failures: list[tuple[int, BaseException]]
    ) -> None:
        """Authorization refusals (missing ACL) keep Kafka not-ready until WRITE is allowed:
        see :mod:`broker.kafka_refusals`. Counted once per call."""
        refused = [(i, exc) for i, exc in failures if is_refusal(exc)]
        if refused:
            self._refusals.note(refused[0][1], {records[i][0] for i, _ in refused})

    def _check_sizes(self, records: Sequence[Record], label: str) -> None:
        limits: dict[str, int] = {}
        oversized = []
        for i, (topic, key, value, headers) in enumerate(records):
            limit = limits.get(topic)
            if limit is None:
                limit = limits[topic] = self.record_limit(topic)
            if (size := record_size(key, value, headers)) > limit:
                oversized.append((i, size))
        if oversized:
            index, size = oversized[0]
            self._rejected(RecordRejectReason.RECORD_TOO_LARGE, label)
            raise RecordRejectedError(
                RecordRejectReason.RECORD_TOO_LARGE,
                f"record {index} is {size} bytes; {records[index][0]} takes at most "
                f"{self.record_limit(records[index][0])}",
                tuple(i for i, _ in oversized),
            )

    def _error_for(
        self,
        failures: list[tuple[int, BaseException]],
        call: _Call,
        generation: int,
        *,
        reached_broker: bool,
        culprits: set[int] | None = None,
    ) -> PublishError:
        """Translate the failed records of one call into the one exception the caller gets.

        Any record-fatal failure wins: the other records' failures in the same call are then
        consequences (a broker-side rejection breaks the session, so later batches of the same
        partition fail with ``OutOfOrderSequenceNumber``), and a retriable answer would make the
        vendor resend the same input into the same rejection forever.

        ``culprits`` (when given) are the records that are too large on their own; a record the
        broker rejected only because it shared a batch with another caller's oversized record is
        not one, and its call fails retriably instead.
        """
        classified = [(i, exc, classify(exc)) for i, exc in failures]
        for _, _, c in classified:
            if breaks_session(c, reached_broker=reached_broker):
                self._request_reset(generation, c.reason)
                break
        fatal = [
            (i, exc, c)
            for i, exc, c in classified
            if c.failure is Failure.RECORD_FATAL and (culprits is None or i in culprits)
        ]
        error: PublishError
        if fatal:
            _, exc, first = fatal[0]
            self._rejected(first.reason, call.label)
            error = RecordRejectedError(
                first.reason, f"Kafka rejected the record: {exc!r}", tuple(i for i, *_ in fatal)
            )
        else:
            _, exc, first = classified[0]
            self._failed(first, call.started, call.label)
            error = PublishError(f"Kafka refused the write: {exc!r}")
        error.__cause__ = exc
        return error

    async def _too_large_culprits(
        self, records: Sequence[Record], failures: list[tuple[int, BaseException]]
    ) -> set[int] | None:
        """Which records the broker rejected as too large are too large *on their own*.

        aiokafka batches records of one partition from concurrent callers together, and the
        broker rejects the whole batch: an innocent small record fails with the same
        ``MessageSizeTooLarge`` as the oversized one beside it. The topic's real
        ``max.message.bytes`` (read from Kafka, at most once per topic, bounded by
        ``request_timeout_s``) tells them apart and makes later pre-checks refuse the oversized
        ones before sending. None when no failure is a size rejection or the limit is unknown.
        """
        sized = [
            i for i, exc in failures if classify(exc).reason == RecordRejectReason.RECORD_TOO_LARGE
        ]
        if not sized:
            return None
        culprits: set[int] = set()
        for index in sized:
            topic, key, value, headers = records[index]
            if topic not in self._topic_limits:
                try:
                    limit = await asyncio.wait_for(
                        fetch_max_message_bytes(self._settings, topic),
                        self._settings.request_timeout_s,
                    )
                except TimeoutError:
                    limit = None
                if limit is None:
                    return None
                log.warning(
                    "kafka topic %s takes records up to %d bytes (max.message.bytes); "
                    "larger ones are now refused before sending",
                    topic,
                    limit,
                )
                self.set_topic_limit(topic, limit)
            if record_size(key, value, headers) > self.record_limit(topic):
                culprits.add(index)
        return culprits

    def _release(self, futures: list[asyncio.Future[Any]]) -> None:
        """Stop counting ``futures`` as in flight once each is done (at once for those already
        done: no callback per record on the happy path); count those a closed producer never
        delivered as abandoned."""
        for future in futures:
            if future.done():
                self._settle(future)
            else:  # the call ended early (timeout, cancellation): settle when Kafka answers
                future.add_done_callback(self._settle)

    def _settle(self, future: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        if future.cancelled() or isinstance(future.exception(), kafka_errors.ProducerClosed):
            self._abandoned += 1

    def _failed(self, classified: Classified, started: float, label: str) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.publish_latency.labels(label, "error").observe(elapsed)
        self._metrics.publish_failures.labels(classified.reason).inc()
        if classified.failure is Failure.TRANSIENT:
            self._health.mark_failed(f"publish failed: {classified.reason}")
            self._metrics.kafka_healthy.set(0)

    def _rejected(self, reason: str, label: str) -> None:
        self._metrics.records_rejected.labels(label, reason).inc()
        log.warning("kafka record rejected (%s, vendor %s): input goes to the DLQ", reason, label)

    # -- producer sessions ---------------------------------------------------------------------

    def _request_reset(self, generation: int, reason: str) -> None:
        """Recreate the producer before the next write, unless a newer one already replaced
        the producer that failed (``generation``)."""
        if generation != self._generation or self._reset_reason is not None:
            return
        self._reset_reason = reason
        log.warning(
            "kafka producer session broken (%s): it is recreated before the next write", reason
        )

    async def _producer_for_send(self) -> tuple[Any, int]:
        if self._reset_reason is not None or self._producer is None:
            async with self._reset_lock:
                if self._reset_reason is not None or self._producer is None:
                    await self._recreate()
        return self._producer, self._generation

    def _refuse_when_stopping(self) -> None:
        """A write that raced ``stop()`` must not start a producer nobody will close."""
        if not self.lifecycle.running:
            raise PublishError("publisher is stopping: nothing was written")

    async def _recreate(self) -> None:
        """Replace the producer with a new idempotent session (the caller holds the lock).

        The old producer keeps ``publish_timeout_s`` to deliver what it holds (other callers'
        records to healthy partitions), in the background; then it is abandoned.
        """
        self._refuse_when_stopping()
        reason = self._reset_reason or "no_producer"
        old, self._producer = self._producer, None
        if old is not None:
            self._retire(old)
        producer = await self._start_producer()
        if not self.lifecycle.running:  # stop() ran while this one was starting
            await _close_producer(producer, 0.0)
            self._refuse_when_stopping()
        self._producer = producer
        self._generation += 1
        self._reset_reason = None
        self._metrics.producer_recreated.labels(reason).inc()
        log.warning("kafka producer recreated after %s (session %d)", reason, self._generation)

    def _retire(self, producer: Any) -> None:
        task = self._supervisor.run_once(
            "kafka-producer-retire", _close_producer(producer, self._settings.publish_timeout_s)
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _new_producer(self) -> Any:
        s = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(s.linger_s * 1000),
            max_batch_size=s.max_batch_bytes,
            max_request_size=s.max_request_bytes,
            compression_type=None if s.compression == "none" else s.compression,
            request_timeout_ms=int(s.request_timeout_s * 1000),
            **client_kwargs(s.security),
        )

    async def _start_producer(self) -> Any:
        """A started producer, or within ``request_timeout_s`` :class:`PublishError` naming the
        cause (:func:`broker.kafka_diagnosis.diagnose`); nothing is left open then."""
        s = self._settings
        producer = self._new_producer()
        with capture_aiokafka_errors() as lines:
            try:
                await asyncio.wait_for(producer.start(), s.request_timeout_s)
            except BaseException as exc:
                await _close_producer(producer, 0.0)
                if not isinstance(exc, kafka_errors.KafkaError | OSError | TimeoutError):
                    raise
                self._health.mark_failed(f"cannot connect: {type(exc).__name__}")
                self._metrics.kafka_healthy.set(0)
                why = diagnose(exc, lines, s.security.ssl_cert_file)
                raise PublishError(
                    f"cannot connect to Kafka at {s.bootstrap_servers}: "
                    f"{why.cause.value}: {why.summary}"
                ) from exc
        return producer

    # -- health probe --------------------------------------------------------------------------

    async def probe(self) -> bool:
        """True when Kafka answers a metadata request and the events topic has leaders.

        Runs every ``health_probe_interval_s`` in the background, so /readyz turns 503 while
        Kafka is down even when nothing is being published. A producer due for recreation is
        recreated here too, so publishing resumes without waiting for traffic.
        """
        if self._reset_reason is not None or self._producer is None:
            try:
                async with self._reset_lock:
                    if self._reset_reason is not None or self._producer is None:
                        await self._recreate()
            except PublishError:
                return False
        topic = self._settings.events_topic
        try:
            client = self._producer.client
            metadata = await asyncio.wait_for(
                client.fetch_all_metadata(), self._settings.request_timeout_s
            )
        except (kafka_errors.KafkaError, OSError, TimeoutError):
            return False
        partitions = metadata.partitions_for_topic(topic)
        if not partitions:
            return bool(metadata.brokers())  # topic not created yet, but brokers answer
        return all(
            (metadata.leader_for_partition(TopicPartition(topic, p)) or -1) >= 0 for p in partitions
        )

    async def _probe_loop(self) -> None:
        interval = self._settings.health_probe_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                healthy = await self.probe()
            except Exception:  # the probe must outlive any surprise; log it and go on
                log.exception("kafka health probe failed unexpectedly")
                healthy = False
            if not healthy:
                self._health.mark_failed("metadata probe failed")
                self._metrics.kafka_healthy.set(0)
            elif not self._refusals.active or await self._write_access_restored():
                self._health.mark_healthy()
                self._metrics.kafka_healthy.set(1)

    async def _write_access_restored(self) -> bool:
        """After an ACL refusal: whether Kafka allows the refused writes now (nothing written)."""
        try:
            return await asyncio.wait_for(
                self._refusals.recheck(self._producer.client), self._settings.request_timeout_s
            )
        except (kafka_errors.KafkaError, OSError, TimeoutError):
            return False


def _fit_dead_letter(
    key: bytes, payload: bytes, headers: Headers, limit: int
) -> tuple[bytes, Headers]:
    """``payload`` unchanged when the record fits ``limit``, else its head cut to fit, with
    headers naming the original size and SHA-256 digest."""
    if record_size(key, payload, headers) <= limit:
        return payload, headers
    marked = [
        *headers,
        ("dlq-truncated", b"true"),
        ("dlq-original-size", str(len(payload)).encode()),
        ("dlq-original-sha256", hashlib.sha256(payload).hexdigest().encode()),
    ]
    room = max(0, limit - record_size(key, b"", marked) - 16)
    return payload[:room], marked


def _answered(call: _Call) -> bool:
    """Whether Kafka answered every record of ``call`` (all enqueued and done)."""
    return len(call.futures) == len(call.records) and all(f.done() for f in call.futures)


async def _settled(futures: list[asyncio.Future[Any]]) -> None:
    """Return once every future is done, without raising their errors or cancelling them.

    Records of one partition share a batch, and a batch's futures complete together: awaiting
    them in order suspends about once per batch, where ``gather`` would run a callback per record.
    """
    for future in futures:
        if not future.done():
            await asyncio.wait((future,))


def _failures(futures: list[asyncio.Future[Any]]) -> list[tuple[int, BaseException]]:
    """(index, error) of each failed future (all done); a cancelled one as CancelledError."""
    failures: list[tuple[int, BaseException]] = []
    for index, future in enumerate(futures):
        if future.cancelled():
            failures.append((index, asyncio.CancelledError()))
        elif (exc := future.exception()) is not None:
            failures.append((index, exc))
    return failures


async def _close_producer(producer: Any, flush_timeout_s: float) -> bool:
    """Flush and close ``producer`` within ``flush_timeout_s``; else abandon it.

    Returns True after a clean close. ``stop()`` runs as a task of its own, started first: its
    first step marks the producer closed, so even a caller cancelled right away leaves no
    "Unclosed AIOKafkaProducer" behind. Abandoning fails the records it still holds (their
    futures end with ``ProducerClosed``): aiokafka has no public abort, so it goes through two
    private attributes (the accumulator and the sender task), looked up defensively.
    """
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=flush_timeout_s)
    if done and not stopping.cancelled() and stopping.exception() is None:
        return True
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(kafka_errors.ProducerClosed())
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_ABANDON_GRACE_S)
        if not task.done():  # it was awaiting in-flight requests: cancel those waits too
            task.cancel()
            await asyncio.wait({task}, timeout=_ABANDON_GRACE_S)
    if not stopping.done():
        await asyncio.wait({stopping}, timeout=_ABANDON_GRACE_S)
    if not stopping.done():
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=_ABANDON_GRACE_S)
    elif not stopping.cancelled() and stopping.exception() is not None:
        log.debug("kafka producer did not close cleanly: %r", stopping.exception())
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.client.close(), _ABANDON_GRACE_S)
    return False
