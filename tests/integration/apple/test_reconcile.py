"""Reconciliation against a real Kafka with a scripted event-status source."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.apple.errors import AppleApiError, AppleAuthError
from adapters.apple.metrics import AppleMetrics
from adapters.apple.reconcile import EventReconciler
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.events import EventType
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from tests.e2e.apple.helpers import events_of, has_id, read_until

pytestmark = pytest.mark.kafka

UID = "2049025000431439"


class ScriptedStatus:
    """Answers event-status calls from a script; records when each call happened."""

    def __init__(self, answers: list[dict[str, Any] | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[float, str]] = []

    async def event_status(self, event_id: str) -> dict[str, Any]:
        self.calls.append((time.monotonic(), event_id))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _settings(**overrides: Any) -> AppleSettings:
    tenant = AppleTenantSettings(notification_auth_tokens=[SecretStr("t")], expected_uid=UID)
    values: dict[str, Any] = {
        "enabled": True,
        "tenants": {"acme": tenant},
        "reconcile_after_s": 0.2,
        "status_poll_interval_s": 0.3,
    }
    values.update(overrides)
    return AppleSettings(**values)


def _status(state: str, done: int = 0) -> dict[str, Any]:
    return {
        "eventStatus": state,
        "eventType": "ASSOCIATE",
        "numCompleted": done,
        "numRequested": 4,
        "uId": UID,
    }


@pytest.fixture
async def publisher(kafka_settings: KafkaSettings) -> AsyncIterator[KafkaPublisher]:
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as pub:
        yield pub


async def _run_until_published(
    reconciler: EventReconciler, kafka: KafkaSettings, event_id: str
) -> list[Any]:
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    try:
        return await read_until(kafka.bootstrap_servers, kafka.events_topic, has_id(event_id), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_pending_is_polled_again_no_sooner_than_the_interval(
    kafka_settings: KafkaSettings, publisher: KafkaPublisher
) -> None:
    source = ScriptedStatus([_status("PENDING"), _status("PENDING", 2), _status("COMPLETE", 4)])
    metrics = AppleMetrics(BrokerMetrics().registry)
    reconciler = EventReconciler(_settings(), kafka_settings, publisher, metrics, {"acme": source})
    assert await reconciler.track("acme", "ev-1")
    assert not await reconciler.track("acme", "ev-1")  # already tracked

    # Tracking is durable: a fresh reconciler (a restarted broker) sees the event.
    reloaded = EventReconciler(_settings(), kafka_settings, publisher, metrics, {"acme": source})
    assert await reloaded.load(timeout_s=30) == 1

    records = await _run_until_published(reconciler, kafka_settings, "status:ev-1:COMPLETE")
    (event,) = [e for e in events_of(records) if e.type is EventType.APPLE_EVENT_STATUS]
    assert event.data["event_status"] == "COMPLETE"
    assert event.data["num_completed"] == 4
    assert event.partitionkey == f"apple:{UID}"
    assert len(source.calls) == 3
    gaps = [b[0] - a[0] for a, b in zip(source.calls, source.calls[1:], strict=False)]
    assert all(gap >= 0.3 * 0.95 for gap in gaps), gaps
    assert reconciler.tracked == []
    after = EventReconciler(_settings(), kafka_settings, publisher, metrics, {"acme": source})
    assert await after.load(timeout_s=30) == 0  # the state entry was deleted (tombstone)


async def test_unknown_event_is_final_and_errors_are_retried(
    kafka_settings: KafkaSettings, publisher: KafkaPublisher
) -> None:
    source = ScriptedStatus(
        [
            AppleAuthError("expired", error_number=9621),
            AppleApiError("EventId could not be found.", error_number=9708),
        ]
    )
    reconciler = EventReconciler(
        _settings(status_poll_interval_s=0.1),
        kafka_settings,
        publisher,
        AppleMetrics(BrokerMetrics().registry),
        {"acme": source},
    )
    await reconciler.track("acme", "ev-gone")
    records = await _run_until_published(reconciler, kafka_settings, "status:ev-gone:NOT_FOUND")
    (event,) = events_of(records)
    # Outcome unknown to Apple itself: forwarded as mdm.unknown, never typed as a success.
    assert event.type is EventType.UNKNOWN
    assert event.data["raw"]["eventStatus"] == "NOT_FOUND"
    assert event.data["raw"]["failures"][0]["errorNumber"] == 9708
    assert event.source == f"/apple/locations/{UID}"  # from the tenant's expected uId
    assert len(source.calls) == 2


async def test_notifications_postpone_the_status_poll(
    kafka_settings: KafkaSettings, publisher: KafkaPublisher
) -> None:
    source = ScriptedStatus([_status("COMPLETE", 4)])
    reconciler = EventReconciler(
        _settings(reconcile_after_s=30.0),
        kafka_settings,
        publisher,
        AppleMetrics(BrokerMetrics().registry),
        {"acme": source},
    )
    await reconciler.track("acme", "ev-busy")
    (tracked,) = reconciler.tracked
    before = tracked.due_at
    reconciler.note_notification("acme", "ev-busy")
    reconciler.note_notification("acme", "not-tracked")
    assert tracked.due_at >= before
    assert await reconciler.run_once() == 0  # nothing due yet
    assert source.calls == []
    tracked.due_at = 0.0  # quiet long enough
    assert await reconciler.run_once() == 1
    assert len(source.calls) == 1
