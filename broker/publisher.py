"""Kafka publisher: the only place that writes canonical events, dead letters and state records.

Guarantees of :meth:`KafkaPublisher.publish`:

* It returns only after **every** record of the call was acknowledged by Kafka with ``acks=all``
  (idempotent producer, so producer retries never duplicate a record inside one session).
* Otherwise it raises :class:`~broker.errors.PublishError` within ``publish_timeout_s`` (aiokafka
  alone may wait forever while Kafka is down). Some records may still reach Kafka later: callers
  must not acknowledge the vendor, and the deterministic event ids make the later redelivery a
  harmless duplicate for the idempotent consumer.
* Records are keyed by ``partitionkey``; records of one key keep their order within one call
  (one partition, idempotent producer with in-flight ordering).

Kafka health (:class:`~broker.health.KafkaHealth`) follows the outcomes: a failure marks it
unhealthy, a success or a successful background metadata probe marks it healthy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from broker.errors import NotStartedError, PublishError
from broker.events import KAFKA_HEADERS, CanonicalEvent, encode_event
from broker.health import KafkaHealth
from broker.kafka_security import client_kwargs
from broker.metrics import BrokerMetrics

if TYPE_CHECKING:
    from broker.settings import KafkaSettings

log = logging.getLogger(__name__)


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class KafkaPublisher:
    """aiokafka producer with acks=all, idempotence, explicit linger/batch and bounded waits."""

    def __init__(
        self, settings: KafkaSettings, health: KafkaHealth, metrics: BrokerMetrics
    ) -> None:
        self._settings = settings
        self._health = health
        self._metrics = metrics
        self._producer: Any = None
        self._state = _State.NEW
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> KafkaSettings:
        return self._settings

    @property
    def health(self) -> KafkaHealth:
        return self._health

    async def start(self) -> None:
        """Connect to Kafka. Idempotent; a stopped publisher cannot be started again.

        Raises :class:`PublishError` if Kafka cannot be reached within ``request_timeout_s``.
        """
        if self._state is _State.STARTED:
            return
        if self._state is _State.STOPPED:
            raise NotStartedError("publisher was stopped; create a new one")
        s = self._settings
        self._producer = AIOKafkaProducer(
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
        try:
            await asyncio.wait_for(self._producer.start(), s.request_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
            self._health.mark_failed(f"cannot connect: {type(exc).__name__}")
            self._metrics.kafka_healthy.set(0)
            raise PublishError(f"cannot connect to Kafka at {s.bootstrap_servers}: {exc}") from exc
        self._state = _State.STARTED
        self._probe_task = asyncio.create_task(self._probe_loop(), name="kafka-health-probe")

    async def stop(self) -> None:
        """Flush buffered records (bounded by ``publish_timeout_s``) and close. Idempotent."""
        if self._state is not _State.STARTED:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        try:
            await asyncio.wait_for(self._producer.stop(), self._settings.publish_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("kafka producer did not close cleanly: %s", exc)
        self._producer = None

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        if self._state is _State.STARTED:
            warnings.warn(f"Unclosed KafkaPublisher {self!r}", ResourceWarning, stacklevel=1)

    # -- writing -----------------------------------------------------------------------------

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        """Write ``events`` to the events topic and wait for every ack (see module docstring)."""
        if not events:
            return
        records = [
            (self._settings.events_topic, e.partitionkey.encode(), encode_event(e), KAFKA_HEADERS)
            for e in events
        ]
        vendors = {e.vendor.value for e in events}
        await self._send_all(records, vendors.pop() if len(vendors) == 1 else "mixed")
        for event in events:
            self._metrics.events_published.labels(event.vendor.value, event.type.value).inc()

    async def dead_letter(
        self,
        payload: bytes,
        *,
        vendor: str,
        reason: str,
        detail: str = "",
        tenant: str = "",
        content_type: str = "application/octet-stream",
    ) -> None:
        """Write authenticated-but-unusable input, unchanged, to the DLQ topic; wait for the ack.

        Headers carry ``dlq-reason``, ``dlq-detail`` (truncated to 1 KiB), ``vendor``, ``tenant``,
        ``content-type`` and ``received-at`` (epoch ms). Raises :class:`PublishError` like publish.
        """
        headers = [
            ("dlq-reason", reason.encode()),
            ("dlq-detail", detail[:1024].encode()),
            ("vendor", vendor.encode()),
            ("tenant", tenant.encode()),
            ("content-type", content_type.encode()),
            ("received-at", str(int(time.time() * 1000)).encode()),
        ]
        key = f"{vendor}:{tenant}".encode()
        await self._send_all([(self._settings.dlq_topic, key, payload, headers)], vendor)
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

    async def _send_all(
        self,
        records: Sequence[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]],
        label: str,
    ) -> None:
        """Send and await every ack within ``publish_timeout_s``; ``label`` is the metrics vendor."""
        if self._state is not _State.STARTED:
            raise NotStartedError("publisher is not started")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                futures = [
                    await self._producer.send(topic, value=value, key=key, headers=headers)
                    for topic, key, value, headers in records
                ]
                await asyncio.gather(*futures)
        except TimeoutError as exc:
            self._fail("timeout", started, label)
            raise PublishError(
                f"Kafka did not ack {len(records)} record(s) within "
                f"{self._settings.publish_timeout_s}s"
            ) from exc
        except KafkaError as exc:
            self._fail(type(exc).__name__, started, label)
            raise PublishError(f"Kafka refused the write: {exc!r}") from exc
        self._metrics.publish_latency.labels(label, "ok").observe(time.perf_counter() - started)
        self._health.mark_healthy()
        self._metrics.kafka_healthy.set(1)

    def _fail(self, error: str, started: float, label: str) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.publish_latency.labels(label, "error").observe(elapsed)
        self._metrics.publish_failures.labels(error).inc()
        self._health.mark_failed(f"publish failed: {error}")
        self._metrics.kafka_healthy.set(0)

    # -- health probe ------------------------------------------------------------------------

    async def probe(self) -> bool:
        """True when Kafka answers a metadata request and the events topic has leaders.

        Runs every ``health_probe_interval_s`` in the background, so /readyz turns 503 while
        Kafka is down even when nothing is being published.
        """
        if self._producer is None:
            return False
        topic = self._settings.events_topic
        try:
            client = self._producer.client
            metadata = await asyncio.wait_for(
                client.fetch_all_metadata(), self._settings.request_timeout_s
            )
        except (KafkaError, OSError, TimeoutError):
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
            if await self.probe():
                self._health.mark_healthy()
                self._metrics.kafka_healthy.set(1)
            else:
                self._health.mark_failed("metadata probe failed")
                self._metrics.kafka_healthy.set(0)
