"""The consumer's dead-letter topic: where records go that the handler could not take.

The record's key and value are copied unchanged (so it can be re-published as is); headers keep the
original ones and add ``dlq-reason`` (a :class:`~broker.consumer.metrics.DeadLetterReason`),
``dlq-detail`` (error text, at most 1 KiB), ``dlq-attempts``, ``dlq-group``, ``dlq-source-topic``,
``dlq-source-partition``, ``dlq-source-offset`` and ``dlq-at`` (epoch ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from broker.consumer.errors import ConsumerError
from broker.consumer.metrics import DeadLetterReason
from broker.consumer.records import ConsumedRecord
from broker.kafka_security import KafkaSecurity, client_kwargs

log = logging.getLogger(__name__)

_DLQ_HEADERS = frozenset(
    {
        "dlq-reason",
        "dlq-detail",
        "dlq-attempts",
        "dlq-group",
        "dlq-source-topic",
        "dlq-source-partition",
        "dlq-source-offset",
        "dlq-at",
    }
)


class DeadLetterSink(Protocol):
    """Writes one record to the dead-letter topic and returns only once it is stored."""

    async def send(
        self, record: ConsumedRecord, *, reason: DeadLetterReason, detail: str, attempts: int
    ) -> None:
        """Raise on failure; the caller retries (the source offset is not committed meanwhile)."""


def dead_letter_headers(
    record: ConsumedRecord, *, group: str, reason: DeadLetterReason, detail: str, attempts: int
) -> list[tuple[str, bytes]]:
    """Original headers (minus earlier ``dlq-*`` ones) followed by this dead-lettering's."""
    headers = [(k, v) for k, v in record.headers if k not in _DLQ_HEADERS]
    headers += [
        ("dlq-reason", reason.value.encode()),
        ("dlq-detail", detail[:1024].encode()),
        ("dlq-attempts", str(attempts).encode()),
        ("dlq-group", group.encode()),
        ("dlq-source-topic", record.topic.encode()),
        ("dlq-source-partition", str(record.partition).encode()),
        ("dlq-source-offset", str(record.offset).encode()),
        ("dlq-at", str(int(time.time() * 1000)).encode()),
    ]
    return headers


class KafkaDeadLetterSink:
    """aiokafka producer (acks=all, idempotent) for one dead-letter topic; bounded waits."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        group: str,
        client_id: str,
        timeout_s: float,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._security = security or KafkaSecurity()
        self._topic = topic
        self._group = group
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._producer: Any = None

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-dlq",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(self._timeout_s * 1000),
            **client_kwargs(self._security),
        )
        try:
            await asyncio.wait_for(producer.start(), self._timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise ConsumerError(f"cannot start the dead-letter producer: {exc!r}") from exc
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self._timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("dead-letter producer did not close cleanly: %r", exc)

    async def send(
        self, record: ConsumedRecord, *, reason: DeadLetterReason, detail: str, attempts: int
    ) -> None:
        if self._producer is None:
            raise ConsumerError("dead-letter producer is not started")
        headers = dead_letter_headers(
            record, group=self._group, reason=reason, detail=detail, attempts=attempts
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                future = await self._producer.send(
                    self._topic, value=record.value, key=record.key, headers=headers
                )
                await future
        except (KafkaError, TimeoutError) as exc:
            raise ConsumerError(f"dead-letter write to {self._topic} failed: {exc!r}") from exc
