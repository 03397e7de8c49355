"""Explicit watch requests: records on ``kapua.watch_topic`` (default ``mdm.kapua.watch``).

Value: JSON ``{"scopeId": "...", "deviceId": "...", "operationId": "<operation entity id>"}``
(``id`` is accepted for ``operationId``). Consumed in the consumer group ``{group_id}-watch``:
each request is registered (a state record, acked by Kafka) and only then is the request's offset
committed, so a crash re-reads it (registration is idempotent). A malformed request goes to the
dead-letter topic with reason ``malformed`` and is then committed. A request for an operation that
already closed is answered by its owner reading the operation and publishing the terminal event
(unless it was closed within ``done_retention_s``, in which case it was published already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from adapters.kapua.metrics import KapuaMetrics, WatchOutcome
from adapters.kapua.replay import WATCH_REQUEST, letter_context
from adapters.kapua.scheduler import PollScheduler
from adapters.kapua.settings import KapuaSettings
from broker.errors import KafkaAccessError, PublishError
from broker.kafka_diagnosis import (
    capture_aiokafka_errors,
    read_refusal,
    start_client,
    stop_client,
)
from broker.kafka_security import client_kwargs
from broker.metrics import RejectReason
from broker.settings import KafkaSettings
from broker.sink import EventSink

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9\-_=]{1,128}$")


def parse_watch_request(value: bytes | None) -> tuple[str, str, str]:
    """(scopeId, deviceId, operationId) of a request; raises ValueError naming the problem."""
    if value is None:
        raise ValueError("empty record")
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    scope, device = doc.get("scopeId"), doc.get("deviceId")
    operation = doc.get("operationId", doc.get("id"))
    for name, item in (("scopeId", scope), ("deviceId", device), ("operationId", operation)):
        if not isinstance(item, str) or not _ID.match(item):
            raise ValueError(f"{name} missing or not a Kapua id")
    if scope == "_":
        raise ValueError("scopeId must be explicit in a watch request")
    return str(scope), str(device), str(operation)


class WatchConsumer:
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: KapuaSettings,
        scheduler: PollScheduler,
        publisher: EventSink,
        metrics: KapuaMetrics,
        client_id: str,
    ) -> None:
        self._kafka = kafka
        self._s = settings
        self._scheduler = scheduler
        self._publisher = publisher
        self._metrics = metrics
        self._client_id = client_id
        self._consumer: Any = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self._s.watch_topic,
            bootstrap_servers=self._kafka.bootstrap_servers,
            client_id=f"{self._client_id}-watch",
            group_id=f"{self._s.group_id}-watch",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self._s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self._s.heartbeat_interval_s * 1000),
            **client_kwargs(self._kafka.security),
        )
        try:
            # a wrong password or TLS setup surfaces here
            await start_client(self._consumer, self._kafka.security.ssl_cert_file)
        except KafkaAccessError as exc:
            self._metrics.broker.kafka_connect_errors.labels(exc.cause).inc()
            raise

    def _refused(self, exc: KafkaError | None, lines: list[str]) -> KafkaAccessError | None:
        """The named error when Kafka refuses this principal for good (counted), else None: see
        :func:`broker.kafka_diagnosis.read_refusal` (with the client certificate)."""
        cert_file = self._kafka.security.ssl_cert_file
        return read_refusal(exc, lines, cert_file, self._metrics.broker)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await stop_client(consumer)

    async def run(self, stop: asyncio.Event) -> None:
        """Register requests until ``stop`` is set. Raises :class:`KafkaAccessError` (counted)
        when Kafka refuses this member for good, as the state-topic members do
        (:class:`broker.shard.StateShard`): an operator must act, the task is named in /readyz."""
        with capture_aiokafka_errors() as lines:
            while not stop.is_set():
                try:
                    batch = await self._consumer.getmany(timeout_ms=500, max_records=500)
                except KafkaError as exc:
                    if (refused := self._refused(exc, lines)) is not None:
                        raise refused from exc
                    log.warning("kapua watch topic read failed: %s", exc)
                    await asyncio.sleep(self._s.watch_retry_s)
                    continue
                if lines and (refused := self._refused(None, lines)) is not None:
                    raise refused
                if not batch:
                    continue
                handled = True
                for records in batch.values():
                    for record in records:
                        handled = handled and await self._handle(record.value, stop)
                if not handled:
                    return  # stopping mid-batch: offsets stay uncommitted, requests are re-read
                with contextlib.suppress(KafkaError):
                    await self._consumer.commit()

    async def _handle(self, value: bytes | None, stop: asyncio.Event) -> bool:
        """Register one request, retrying until the state write is acked (or we stop)."""
        try:
            scope, device, operation = parse_watch_request(value)
        except ValueError as exc:
            problem = str(exc)
            self._metrics.watch_requests.labels(WatchOutcome.INVALID.value).inc()
            log.warning("kapua watch request rejected: %s", problem)
            return await self._retry(
                lambda: self._publisher.dead_letter(
                    value or b"",
                    vendor="kapua",
                    reason=RejectReason.MALFORMED.value,
                    detail=f"watch request: {problem}",
                    content_type="application/json",
                    context=letter_context(WATCH_REQUEST),
                ),
                stop,
            )
        register = lambda: self._scheduler.register(scope, device, operation, "request")  # noqa: E731
        if not await self._retry(register, stop):
            return False
        self._metrics.watch_requests.labels(WatchOutcome.ACCEPTED.value).inc()
        return True

    async def _retry(self, action: Any, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            try:
                await action()
                return True
            except PublishError as exc:
                log.warning("kapua watch request not stored yet (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._s.watch_retry_s)
        return False
