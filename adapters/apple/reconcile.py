"""Reconciliation of Apple async events (associate, disassociate, revoke, user create/update/retire).

Apple drops a notification after 3 failed deliveries, so downstream services register the
``eventId`` of every async request they start (``POST /apple/{tenant}/tracked-events``, see
docs/apple.md). For each tracked event:

* registration is written to the compacted state topic (key ``apple/tracked/{tenant}/{eventId}``)
  before it is acknowledged, so tracking survives a restart; with several instances, an event is
  reconciled by the instance owning its state-topic partition (consumer group
  ``apple.sync.group_id``, see :meth:`EventReconciler.attach_shard`), which loads it from there;
* every published notification carrying that ``eventId`` pushes its deadline to
  ``reconcile_after_s`` from now; once the event has been quiet that long the broker polls
  ``GET /status?eventId=``, and again every ``status_poll_interval_s`` while it is ``PENDING``;
* when the status is anything but ``PENDING`` (``COMPLETE``, ``FAILED``, 9708 "EventId could not
  be found", or a status Apple adds later), one event with the deterministic id
  ``status:{eventId}:{eventStatus}`` is published, typed by the outcome rule of
  :func:`~adapters.apple.normalize.status_event` (``mdm.apple.event_status`` /
  ``mdm.assignment.failed`` / ``mdm.user.failed`` / ``mdm.unknown``), and only after its Kafka ack
  is the state entry deleted (a crash in between repeats the same event id, which the idempotent
  consumer dedupes).

So every tracked event ends with exactly one (deduplicable) event stating its outcome.
After a restart, the deadline counts from registration (a conservative early poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from adapters.apple.errors import AppleApiError
from adapters.apple.metrics import AppleMetrics
from adapters.apple.models import StatusResponse
from adapters.apple.normalize import PENDING_EVENT_STATUS, status_event
from adapters.apple.settings import AppleSettings
from broker.errors import AdapterError, BrokerError, PublishError
from broker.settings import KafkaSettings
from broker.sink import StateSink
from broker.state import StateWriter, load_state

log = logging.getLogger(__name__)

STATE_PREFIX = "apple/tracked/"
EVENT_NOT_FOUND = 9708
NOT_FOUND_STATUS = "NOT_FOUND"


class StatusSource(Protocol):
    """What reconciliation needs from the API client (AppleApiClient implements it)."""

    async def event_status(self, event_id: str) -> dict[str, Any]: ...


@dataclass
class TrackedEvent:
    tenant: str
    event_id: str
    registered_at: float
    due_at: float
    polls: int = 0
    partition: int | None = None

    @property
    def state_key(self) -> str:
        return state_key(self.tenant, self.event_id)


def state_key(tenant: str, event_id: str) -> str:
    return f"{STATE_PREFIX}{tenant}/{event_id}"


class EventReconciler:
    """Tracks async events and publishes their final status when notifications went missing."""

    def __init__(
        self,
        settings: AppleSettings,
        kafka: KafkaSettings,
        publisher: StateSink,
        metrics: AppleMetrics,
        sources: Mapping[str, StatusSource],
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._publisher = publisher
        self._writer = StateWriter(publisher)
        self._metrics = metrics
        self._sources = sources
        self._events: dict[tuple[str, str], TrackedEvent] = {}
        self._wake = asyncio.Event()
        self._owns: Callable[[str], int | None] | None = None

    # -- sharded mode: the state shard decides which instance reconciles which event ----------

    def attach_shard(self, owner_partition: Callable[[str], int | None]) -> None:
        """Sharded mode: events live in the memory of the instance owning their state partition.

        ``owner_partition(key)`` is the partition of ``key`` when this instance owns it, else None.
        The state shard then feeds :meth:`on_loaded`, :meth:`on_revoked` and :meth:`on_record`
        (use them instead of :meth:`load`); :meth:`track` writes the registration and keeps it in
        memory only here if this instance owns it (its owner learns it from the state topic).
        A poll in flight while its partition moves may be repeated by the new owner: the status
        event's id is deterministic, so that is a duplicate the consumer drops.
        """
        self._owns = owner_partition

    def _add(self, value: Any, partition: int | None) -> bool:
        if not isinstance(value, dict):
            return False
        tenant, event_id = value.get("tenant"), value.get("event_id")
        registered = value.get("registered_at")
        if not isinstance(tenant, str) or not isinstance(event_id, str):
            return False
        if (tenant, event_id) in self._events:
            return False
        registered_at = float(registered) if isinstance(registered, int | float) else time.time()
        self._events[(tenant, event_id)] = TrackedEvent(
            tenant,
            event_id,
            registered_at,
            registered_at + self._settings.reconcile_after_s,
            partition=partition,
        )
        return True

    async def on_loaded(self, partition: int, entries: dict[str, Any]) -> None:
        added = sum(
            self._add(value, partition)
            for key, value in entries.items()
            if key.startswith(STATE_PREFIX)
        )
        self._update_gauge()
        self._wake.set()
        if added:
            log.info("apple reconciliation: %d tracked event(s) taken over", added)

    async def on_revoked(self, partitions: set[int]) -> None:
        for key in [k for k, e in self._events.items() if e.partition in partitions]:
            del self._events[key]
        self._update_gauge()

    async def on_record(self, partition: int, key: str, value: Any) -> None:
        if not key.startswith(STATE_PREFIX):
            return
        if value is None:
            tenant, _, event_id = key[len(STATE_PREFIX) :].partition("/")
            self._events.pop((tenant, event_id), None)
        elif self._add(value, partition):
            self._wake.set()
        self._update_gauge()

    @property
    def tracked(self) -> list[TrackedEvent]:
        return sorted(self._events.values(), key=lambda e: e.due_at)

    def _update_gauge(self) -> None:
        self._metrics.tracked_events.set(len(self._events))

    async def load(self, timeout_s: float = 60.0) -> int:
        """Reload tracked events from the state topic; returns how many. Raises PublishError."""
        entries = await load_state(self._kafka, STATE_PREFIX, timeout_s=timeout_s)
        for value in entries.values():
            if not isinstance(value, dict):
                continue
            tenant, event_id = value.get("tenant"), value.get("event_id")
            registered = value.get("registered_at")
            if not isinstance(tenant, str) or not isinstance(event_id, str):
                continue
            registered_at = (
                float(registered) if isinstance(registered, int | float) else time.time()
            )
            self._events[(tenant, event_id)] = TrackedEvent(
                tenant, event_id, registered_at, registered_at + self._settings.reconcile_after_s
            )
        self._update_gauge()
        self._wake.set()
        log.info("apple reconciliation: %d tracked event(s) loaded", len(self._events))
        return len(self._events)

    def can_track(self, tenant: str) -> bool:
        return tenant in self._sources

    async def track(self, tenant: str, event_id: str) -> bool:
        """Start tracking; returns False if already tracked. Returns after the state write was
        acked (raises PublishError otherwise, and nothing is tracked)."""
        if (tenant, event_id) in self._events:
            return False
        now = time.time()
        key = state_key(tenant, event_id)
        await self._writer.put(key, {"tenant": tenant, "event_id": event_id, "registered_at": now})
        partition = None
        if self._owns is not None:
            partition = self._owns(key)
            if partition is None:
                return True  # another instance owns it and reads it from the state topic
        self._events[(tenant, event_id)] = TrackedEvent(
            tenant, event_id, now, now + self._settings.reconcile_after_s, partition=partition
        )
        self._update_gauge()
        self._wake.set()
        return True

    def note_notification(self, tenant: str, event_id: str) -> None:
        """A notification for ``event_id`` was published: the event is alive, push its deadline."""
        tracked = self._events.get((tenant, event_id))
        if tracked is not None:
            tracked.due_at = max(tracked.due_at, time.time() + self._settings.reconcile_after_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll due events until ``stop`` is set; sleeps until the next deadline or a wake-up."""
        while not stop.is_set():
            due = [e.due_at for e in self._events.values()]
            timeout = max(0.0, min(due) - time.time()) if due else None
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            if stop.is_set():
                return
            try:
                await self.run_once()
            except Exception:  # a bug must not end reconciliation; log it and retry later
                log.exception("apple reconciliation round failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._settings.status_poll_interval_s)

    async def run_once(self) -> int:
        """Poll every event whose deadline passed; returns how many reached a final status."""
        now = time.time()
        finished = 0
        for tracked in [e for e in self.tracked if e.due_at <= now]:
            if await self._poll(tracked):
                finished += 1
        return finished

    def _retry_later(self, tracked: TrackedEvent) -> bool:
        tracked.due_at = time.time() + self._settings.status_poll_interval_s
        return False

    async def _poll(self, tracked: TrackedEvent) -> bool:
        source = self._sources.get(tracked.tenant)
        if source is None:
            log.error("apple tenant %r has no sToken; cannot poll event status", tracked.tenant)
            return self._retry_later(tracked)
        tracked.polls += 1
        try:
            raw = await source.event_status(tracked.event_id)
        except AppleApiError as exc:
            if exc.error_number != EVENT_NOT_FOUND:
                log.warning("apple event status failed for tenant %r: %s", tracked.tenant, exc)
                return self._retry_later(tracked)
            raw = {
                "eventStatus": NOT_FOUND_STATUS,
                "failures": [{"errorNumber": EVENT_NOT_FOUND, "errorMessage": str(exc)}],
            }
        except AdapterError as exc:
            log.warning("apple event status failed for tenant %r: %s", tracked.tenant, exc)
            return self._retry_later(tracked)
        try:
            status = StatusResponse.model_validate(raw)
        except ValidationError as exc:
            log.warning("apple event status unparseable: %s", exc.errors()[:3])
            return self._retry_later(tracked)
        if status.event_status == PENDING_EVENT_STATUS:
            return self._retry_later(tracked)
        tenant_settings = self._settings.tenants.get(tracked.tenant)
        uid = (
            status.uid
            or (tenant_settings.expected_uid if tenant_settings else None)
            or tracked.tenant
        )
        event = status_event(status, raw, event_id=tracked.event_id, uid=uid)
        try:
            await self._publisher.publish([event])
        except BrokerError as exc:  # PublishError, or the publisher is already stopped
            log.warning("apple event status not published, will retry: %s", exc)
            return self._retry_later(tracked)
        self._events.pop((tracked.tenant, tracked.event_id), None)
        self._update_gauge()
        try:
            await self._writer.delete(tracked.state_key)
        except PublishError as exc:  # published already; a reload repeats the same event id
            log.warning("apple tracked event %s not deleted from state: %s", tracked.event_id, exc)
        log.info(
            "apple event %s reconciled: %s after %d poll(s)",
            tracked.event_id,
            status.event_status,
            tracked.polls,
        )
        return True
