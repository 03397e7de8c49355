"""The puller's ack rules against a fake source and a fake publisher (no network, no Kafka)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapters.android.metrics import AndroidMetrics
from adapters.android.normalize import normalize_notification
from adapters.android.puller import LongPollPuller, Normalizer
from adapters.android.source import PulledBatch
from broker.errors import NotStartedError, PublishError, VendorAuthError, VendorUnavailableError
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.retry import Backoff
from simulators.android.notifications import generate


@dataclass
class FakeSource:
    """Hands out scripted batches (or raises scripted errors), then blocks like a long-poll."""

    script: list[PulledBatch | Exception]
    log: list[str]
    ack_errors: list[Exception] = field(default_factory=list)
    pulls: int = 0
    acked: list[str] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def pull(self) -> PulledBatch:
        self.pulls += 1
        if not self.script:
            self.idle.set()
            await asyncio.Event().wait()  # a long-poll with nothing pending
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return PulledBatch(item.handle, item.notifications, time.monotonic() - _age(item))

    async def ack(self, handle: str, timeout_s: float) -> None:
        self.log.append(f"ack:{handle}")
        if self.ack_errors:
            raise self.ack_errors.pop(0)
        self.acked.append(handle)


def _age(batch: PulledBatch) -> float:
    # tests encode "this batch arrived N seconds ago" in arrived_at (as a positive age)
    return batch.arrived_at


@dataclass
class FakePublisher:
    log: list[str]
    delay_s: float = 0.0
    fail: bool = False
    published: list[CanonicalEvent] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise PublishError("kafka down")
        self.published.extend(events)
        self.log.append(f"publish:{len(events)}")

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
        self.dead.append((payload, reason))
        self.log.append("dead_letter")


@dataclass
class Rig:
    source: FakeSource
    publisher: FakePublisher
    puller: LongPollPuller
    metrics: BrokerMetrics
    health: KafkaHealth
    log: list[str]

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def batch(handle: str | None, count: int, age_s: float = 0.0, seed: int = 0) -> PulledBatch:
    return PulledBatch(handle, generate(count, seed=seed, first_seq=seed * 1000), age_s)


async def make_rig(
    script: list[PulledBatch | Exception],
    budget_s: float = 5.0,
    normalize: Normalizer = normalize_notification,
    **pub: Any,
) -> Rig:
    log: list[str] = []
    source = FakeSource(script, log)
    publisher = FakePublisher(log, **pub)
    metrics = BrokerMetrics(CollectorRegistry())
    health = KafkaHealth()
    puller = LongPollPuller(
        source=source,
        normalize=normalize,
        publisher=publisher,
        health=health,
        metrics=metrics,
        android_metrics=AndroidMetrics(metrics.registry),
        pullers=1,
        ack_budget_s=budget_s,
        backoff=lambda: Backoff(0.01, 0.02, jitter=0.0),
    )
    return Rig(source, publisher, puller, metrics, health, log)


@pytest.fixture
async def running() -> AsyncIterator[list[LongPollPuller]]:
    started: list[LongPollPuller] = []
    yield started
    for puller in started:
        await puller.stop(1.0)


async def run_until_idle(rig: Rig, running: list[LongPollPuller]) -> None:
    running.append(rig.puller)
    await rig.puller.start()
    await asyncio.wait_for(rig.source.idle.wait(), 5)


async def test_ack_only_after_publish_and_empty_sets_never_acked(
    running: list[LongPollPuller],
) -> None:
    rig = await make_rig([batch("s1", 3), batch(None, 0), batch("s2", 2, seed=1)])
    await run_until_idle(rig, running)
    assert rig.log == ["publish:3", "ack:s1", "publish:2", "ack:s2"]
    assert rig.value("mdm_broker_android_notification_sets_total", outcome="empty") == 1
    assert rig.value("mdm_broker_android_notification_sets_total", outcome="acked") == 2
    assert rig.value("mdm_broker_android_ack_latency_seconds_count") == 2


async def test_publish_failure_leaves_the_set_unacked(running: list[LongPollPuller]) -> None:
    rig = await make_rig([batch("s1", 3)], fail=True)
    await run_until_idle(rig, running)
    assert rig.source.acked == []
    assert "ack:s1" not in rig.log
    assert rig.value("mdm_broker_android_sets_not_acked_total", reason="publish_failed") == 1


async def test_budget_exceeded_is_not_acked_and_counted(running: list[LongPollPuller]) -> None:
    # The set arrived 4.9 s ago; publishing takes 0.2 s more: beyond the 5 s budget.
    rig = await make_rig([batch("s1", 2, age_s=4.9)], budget_s=5.0, delay_s=0.2)
    await run_until_idle(rig, running)
    assert rig.log == ["publish:2"]
    assert rig.value("mdm_broker_android_ack_deadline_missed_total") == 1
    assert rig.value("mdm_broker_android_sets_not_acked_total", reason="budget_exceeded") == 1
    assert rig.value("mdm_broker_android_ack_latency_seconds_count") == 0


async def test_poison_notification_is_dead_lettered_before_the_ack(
    running: list[LongPollPuller],
) -> None:
    good = generate(2, seed=9)
    bad = {"timestampMillis": "1", "notificationType": "appUpdate"}  # no enterpriseId
    rig = await make_rig([PulledBatch("s1", [good[0], bad, good[1]], 0.0)])
    await run_until_idle(rig, running)
    assert rig.log == ["publish:2", "dead_letter", "ack:s1"]
    ((payload, reason),) = rig.publisher.dead
    assert reason == "schema"
    assert b'"appUpdate"' in payload


async def test_transient_ack_failure_is_retried_within_budget(
    running: list[LongPollPuller],
) -> None:
    rig = await make_rig([batch("s1", 1)])
    rig.source.ack_errors = [VendorUnavailableError("503", status=503)]
    await run_until_idle(rig, running)
    assert rig.log == ["publish:1", "ack:s1", "ack:s1"]
    assert rig.source.acked == ["s1"]


async def test_pull_errors_back_off_by_reason_and_auth_flips_readiness(
    running: list[LongPollPuller],
) -> None:
    rig = await make_rig(
        [
            VendorUnavailableError("429", status=429),
            VendorUnavailableError("503", status=503),
            VendorUnavailableError("reset"),
            VendorAuthError("invalid_grant"),
        ]
    )
    running.append(rig.puller)
    await rig.puller.start()
    await asyncio.wait_for(rig.source.idle.wait(), 5)
    for reason in ("rate_limited", "server_error", "network", "auth"):
        assert rig.value("mdm_broker_android_retries_total", reason=reason) == 1
    # The last pull (blocking) has not succeeded yet: still flagged from the auth failure.
    assert not rig.puller.auth_ok


async def test_no_pull_while_kafka_unhealthy(running: list[LongPollPuller]) -> None:
    rig = await make_rig([batch("s1", 1)])
    rig.health.mark_failed("test")
    running.append(rig.puller)
    await rig.puller.start()
    for _ in range(20):
        await asyncio.sleep(0)
    assert rig.source.pulls == 0
    assert rig.value("mdm_broker_android_pullers_parked") == 1
    rig.health.mark_healthy()
    await asyncio.wait_for(rig.source.idle.wait(), 5)
    assert rig.source.acked == ["s1"]
    assert rig.value("mdm_broker_android_pullers_parked") == 0


async def test_stop_cancels_the_pull_in_flight() -> None:
    rig = await make_rig([])
    await rig.puller.start()
    await asyncio.wait_for(rig.source.idle.wait(), 5)
    await asyncio.wait_for(rig.puller.stop(5.0), 2)
    assert not rig.puller.running


async def test_unexpected_errors_never_stop_the_loop(running: list[LongPollPuller]) -> None:
    calls = 0

    def flaky(raw: Any) -> CanonicalEvent:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("mapping bug")
        return normalize_notification(raw)

    rig = await make_rig([batch("s1", 1), batch("s2", 1, seed=1)], normalize=flaky)
    await run_until_idle(rig, running)
    # The first notification went to the DLQ (then its set was acked), the second was published.
    assert rig.log == ["publish:0", "dead_letter", "ack:s1", "publish:1", "ack:s2"]
    assert rig.publisher.dead[0][1] == "schema"


async def test_a_stopped_puller_refuses_to_restart() -> None:
    rig = await make_rig([])
    await rig.puller.start()
    await rig.puller.stop(1.0)
    with pytest.raises(NotStartedError):
        await rig.puller.start()
