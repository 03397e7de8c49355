"""Concurrent Pub/Sub pullers for AMAPI: pull, normalize, publish, then acknowledge per message.

The pull loop (concurrency, backoff on 429/5xx/network/auth, parking while Kafka is unhealthy,
stop semantics) is :class:`adapters.android.puller.LongPollPuller`'s; this module handles a pulled
batch message by message. Guarantees, per message:

* It is acknowledged only after Kafka acked every canonical event built from it (or, for a message
  that cannot be decoded/normalized or that Kafka rejects as a record, after its dead letter was
  acked). Nothing is acknowledged before its Kafka ack.
* While its publish is in flight, its lease is extended with ``modifyAckDeadline`` (to
  ``lease_extension_s``) ``extend_before_s`` before it runs out, for at most ``max_lease_s`` from
  arrival; each extended ack id is counted.
* When publishing fails (Kafka down, timeout), the message is nacked (``modifyAckDeadline`` 0) so
  Pub/Sub redelivers it soon, with the same ``messageId`` and hence the same event ids.
* The acknowledge is sent only while the lease has more than ``ack_margin_s`` left (the ack
  budget); otherwise the message is left to expire, counted, and comes back as a duplicate that the
  idempotent consumer skips. Acknowledge failures (429/5xx) are retried with backoff within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from adapters.android.metrics import AmapiMetrics, MessageOutcome, ModAckKind, NotAckedReason
from adapters.android.pubsub import ReceivedMessage
from adapters.android.puller import BackoffFactory, LongPollPuller
from adapters.android.source import PulledBatch
from broker.errors import (
    AdapterError,
    NormalizationError,
    PublishError,
    RecordRejectedError,
    VendorUnavailableError,
)
from broker.events import CanonicalEvent, Vendor
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.retry import Backoff
from broker.sink import EventSink
from broker.supervisor import Supervisor

log = logging.getLogger(__name__)

MessageNormalizer = Callable[[Any], list[CanonicalEvent]]


class LeasedSource(Protocol):
    """A pull source whose deliveries are acked, extended and nacked by ack id."""

    async def pull(self) -> PulledBatch: ...

    async def ack(self, handle: str, timeout_s: float) -> None: ...

    async def acknowledge(self, ack_ids: Sequence[str], timeout_s: float) -> None: ...

    async def modify_ack_deadline(
        self, ack_ids: Sequence[str], deadline_s: int, timeout_s: float
    ) -> None: ...


@dataclass(frozen=True)
class LeasePolicy:
    """How long deliveries are held (seconds; see the module docstring)."""

    ack_deadline_s: float
    lease_extension_s: int
    extend_before_s: float
    ack_margin_s: float
    max_lease_s: float
    api_timeout_s: float


class _Lease:
    """The lease of one batch's messages still being published."""

    def __init__(self, arrived_at: float, deadline_s: float) -> None:
        self.arrived_at = arrived_at
        self.until = arrived_at + deadline_s
        self.pending: dict[str, ReceivedMessage] = {}
        self.done = asyncio.Event()


class PubsubPuller(LongPollPuller):
    """``pullers`` concurrent loops over one Pub/Sub subscription (see the module docstring)."""

    def __init__(
        self,
        *,
        source: LeasedSource,
        normalize: MessageNormalizer,
        publisher: EventSink,
        health: KafkaHealth,
        metrics: BrokerMetrics,
        amapi_metrics: AmapiMetrics,
        pullers: int,
        policy: LeasePolicy,
        backoff: BackoffFactory,
        clock: Callable[[], float] = time.monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__(
            source=source,
            normalize=_unused_normalizer,
            publisher=publisher,
            health=health,
            metrics=metrics,
            android_metrics=amapi_metrics,
            pullers=pullers,
            ack_budget_s=policy.ack_deadline_s,
            backoff=backoff,
            vendor=Vendor.ANDROID,
            supervisor=supervisor,
            task_name="amapi-puller",
        )
        self._leased = source
        self._normalize_message = normalize
        self._policy = policy
        self._amapi = amapi_metrics
        self._clock = clock

    # -- LongPollPuller hooks ----------------------------------------------------------------

    async def _handle(self, batch: PulledBatch) -> None:
        messages: list[ReceivedMessage] = list(batch.notifications)
        lease = _Lease(batch.arrived_at, self._policy.ack_deadline_s)
        lease.pending = {m.ack_id: m for m in messages}
        extender = asyncio.create_task(self._extend_while_publishing(lease))
        try:
            outcomes = await asyncio.gather(*(self._store(m, lease) for m in messages))
        finally:
            lease.done.set()
            extender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await extender
        to_ack = [m.ack_id for m, ok in zip(messages, outcomes, strict=True) if ok]
        to_nack = [m.ack_id for m, ok in zip(messages, outcomes, strict=True) if not ok]
        if to_nack:
            await self._nack(to_nack)
        if to_ack:
            await self._ack(to_ack, lease)

    # -- one message -------------------------------------------------------------------------

    async def _store(self, received: ReceivedMessage, lease: _Lease) -> bool:
        """Publish one message's events (or its dead letter); True once Kafka acked them."""
        try:
            return await self._store_unguarded(received)
        except Exception:  # a bug must not lose the message: nack it, Pub/Sub redelivers
            log.exception("amapi: unexpected error storing message %s", received.message_id)
            return False
        finally:
            lease.pending.pop(received.ack_id, None)

    async def _store_unguarded(self, received: ReceivedMessage) -> bool:
        message_id = received.message_id
        try:
            events = self._normalize_message(received.message)
        except NormalizationError as exc:
            log.warning("amapi: message %s dead-lettered (%s)", message_id, exc)
            return await self._dead_letter(received, exc.reason, exc.detail)
        for event in events:
            self._metrics.notifications_received.labels(self._vendor.value, event.type.value).inc()
        try:
            await self._publisher.publish(events)
        except RecordRejectedError as exc:
            log.warning("amapi: Kafka rejected message %s; dead-lettered (%s)", message_id, exc)
            return await self._dead_letter(
                received, exc.reason, f"pubsub message {message_id}: {exc.detail}"
            )
        except PublishError as exc:
            log.warning("amapi: message %s not stored (%s); nacking it", message_id, exc)
            return False
        return True

    async def _dead_letter(self, received: ReceivedMessage, reason: str, detail: str) -> bool:
        try:
            await self._publisher.dead_letter(
                orjson.dumps(received.message),
                vendor=self._vendor.value,
                reason=reason,
                detail=detail,
                tenant="",
                content_type="application/json",
            )
        except PublishError as exc:
            log.warning("amapi: dead letter of %s failed (%s); nacking", received.message_id, exc)
            return False
        self._amapi.sets.labels(MessageOutcome.DEAD_LETTERED.value).inc()
        return True

    # -- leases ------------------------------------------------------------------------------

    async def _extend_while_publishing(self, lease: _Lease) -> None:
        p = self._policy
        while not lease.done.is_set():
            wake_at = lease.until - p.extend_before_s
            delay = max(0.0, wake_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lease.done.wait(), delay)
            if lease.done.is_set() or not lease.pending:
                return
            if self._clock() - lease.arrived_at + p.lease_extension_s > p.max_lease_s:
                log.warning(
                    "amapi: lease of %d message(s) not extended past max_lease_s",
                    len(lease.pending),
                )
                return
            ack_ids = list(lease.pending)
            sent_at = self._clock()
            try:
                await self._leased.modify_ack_deadline(
                    ack_ids, p.lease_extension_s, p.api_timeout_s
                )
            except AdapterError as exc:
                log.warning("amapi: modifyAckDeadline (extend) failed: %s", exc)
                if self._clock() >= lease.until:
                    return  # lease gone: Pub/Sub redelivers; keep publishing, the ack is skipped
                continue
            lease.until = sent_at + p.lease_extension_s
            self._amapi.modacks.labels(ModAckKind.EXTEND.value).inc(len(ack_ids))

    async def _nack(self, ack_ids: list[str]) -> None:
        """Best effort: when the nack fails, the lease simply expires and Pub/Sub redelivers."""
        self._amapi.sets.labels(MessageOutcome.NACKED.value).inc(len(ack_ids))
        self._amapi.not_acked.labels(NotAckedReason.PUBLISH_FAILED.value).inc(len(ack_ids))
        try:
            await self._leased.modify_ack_deadline(ack_ids, 0, self._policy.api_timeout_s)
        except AdapterError as exc:
            log.warning("amapi: nack of %d message(s) failed (%s); they expire", len(ack_ids), exc)
            return
        self._amapi.modacks.labels(ModAckKind.NACK.value).inc(len(ack_ids))

    async def _ack(self, ack_ids: list[str], lease: _Lease) -> None:
        """Acknowledge while the lease lasts (minus ``ack_margin_s``); retry 429/5xx in it."""
        backoff: Backoff = self._backoff_factory()
        margin = self._policy.ack_margin_s
        while True:
            remaining = lease.until - margin - self._clock()
            if remaining <= 0:
                log.warning(
                    "amapi: %d message(s) published but their lease ran out; Pub/Sub redelivers "
                    "them (same ids)",
                    len(ack_ids),
                )
                self._amapi.deadline_missed.inc(len(ack_ids))
                self._amapi.not_acked.labels(NotAckedReason.BUDGET_EXCEEDED.value).inc(len(ack_ids))
                self._amapi.sets.labels(MessageOutcome.NOT_ACKED.value).inc(len(ack_ids))
                return
            try:
                await self._leased.acknowledge(ack_ids, min(remaining, self._policy.api_timeout_s))
            except VendorUnavailableError as exc:
                delay = backoff.next_delay(exc.retry_after_s)
                if delay < lease.until - margin - self._clock():
                    log.info("amapi: acknowledge failed (%s); retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self._ack_failed(ack_ids, exc)
                return
            except AdapterError as exc:
                self._ack_failed(ack_ids, exc)
                return
            latency = self._clock() - lease.arrived_at
            for _ in ack_ids:
                self._amapi.ack_latency.observe(latency)
            self._amapi.sets.labels(MessageOutcome.ACKED.value).inc(len(ack_ids))
            return

    def _ack_failed(self, ack_ids: list[str], exc: AdapterError) -> None:
        log.warning("amapi: acknowledge of %d failed (%s); Pub/Sub redelivers", len(ack_ids), exc)
        self._amapi.not_acked.labels(NotAckedReason.ACK_FAILED.value).inc(len(ack_ids))
        self._amapi.sets.labels(MessageOutcome.NOT_ACKED.value).inc(len(ack_ids))


def _unused_normalizer(raw: Any) -> CanonicalEvent:  # pragma: no cover - _handle is overridden
    raise NormalizationError("schema", "PubsubPuller normalizes whole messages")
