"""The AMAPI puller's per-message rules against a fake Pub/Sub source and publisher."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from adapters.android.amapi_normalize import normalize_message
from adapters.android.metrics import AmapiMetrics
from adapters.android.pubsub import ReceivedMessage
from adapters.android.pubsub_puller import LeasePolicy, PubsubPuller
from adapters.android.source import PulledBatch
from broker.errors import PublishError, RecordRejectedError
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.retry import Backoff
from simulators.android import amapi_resources as res


def received(message_id: str, data: str | None = None) -> ReceivedMessage:
    resource = res.device("LC01", f"3f{message_id}")
    encoded = data if data is not None else base64.b64encode(orjson.dumps(resource)).decode()
    return ReceivedMessage(
        ack_id=f"ack-{message_id}",
        message={
            "data": encoded,
            "attributes": {"notificationType": "STATUS_REPORT"},
            "messageId": message_id,
            "publishTime": "2026-12-01T10:00:00Z",
        },
        delivery_attempt=1,
    )


@dataclass
class FakeLeasedSource:
    batches: list[list[ReceivedMessage]]
    log: list[str]
    acked: list[str] = field(default_factory=list)
    modacks: list[tuple[list[str], int]] = field(default_factory=list)
    extended: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    clock: Callable[[], float] = time.monotonic

    async def pull(self) -> PulledBatch:
        if not self.batches:
            await asyncio.Event().wait()
        messages = self.batches.pop(0)
        return PulledBatch(messages[0].ack_id, list(messages), self.clock())

    async def ack(self, handle: str, timeout_s: float) -> None:
        await self.acknowledge([handle], timeout_s)

    async def acknowledge(self, ack_ids: Sequence[str], timeout_s: float) -> None:
        self.log.extend(f"ack:{a}" for a in ack_ids)
        self.acked.extend(ack_ids)
        self._check()

    async def modify_ack_deadline(
        self, ack_ids: Sequence[str], deadline_s: int, timeout_s: float
    ) -> None:
        self.modacks.append((list(ack_ids), deadline_s))
        self.log.extend(f"modack{deadline_s}:{a}" for a in ack_ids)
        if deadline_s > 0:
            self.extended.set()
        self._check()

    def _check(self) -> None:
        nacked = sum(len(ids) for ids, s in self.modacks if s == 0)
        if len(self.acked) + nacked >= self.expected:
            self.settled.set()


@dataclass
class FakePublisher:
    log: list[str]
    fail_ids: set[str] = field(default_factory=set)
    reject_ids: set[str] = field(default_factory=set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    dead: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        self.held.set()
        await self.gate.wait()
        ids = {e.id for e in events}
        if ids & self.reject_ids:
            raise RecordRejectedError("too_large", "record too large")
        if ids & self.fail_ids:
            raise PublishError("kafka down")
        self.log.extend(f"publish:{i}" for i in sorted(ids))

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
        self.dead.append((orjson.loads(payload), reason, detail))
        self.log.append(f"dead:{orjson.loads(payload)['messageId']}")


async def run(
    source: FakeLeasedSource,
    publisher: FakePublisher,
    policy: LeasePolicy,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[PubsubPuller, BrokerMetrics]:
    metrics = BrokerMetrics(CollectorRegistry())
    puller = PubsubPuller(
        source=source,
        normalize=normalize_message,
        publisher=publisher,
        health=KafkaHealth(),
        metrics=metrics,
        amapi_metrics=AmapiMetrics(metrics.registry),
        pullers=1,
        policy=policy,
        backoff=lambda: Backoff(0.01, 0.05),
        clock=clock,
    )
    await puller.start()
    return puller, metrics


POLICY = LeasePolicy(
    ack_deadline_s=30.0,
    lease_extension_s=30,
    extend_before_s=3.0,
    ack_margin_s=1.0,
    max_lease_s=600.0,
    api_timeout_s=1.0,
)


async def test_ack_after_publish_nack_on_failure_dead_letter_then_ack() -> None:
    log: list[str] = []
    messages = [received("1"), received("2"), received("3"), received("4", data="@@not base64")]
    source = FakeLeasedSource([messages], log, expected=4)
    publisher = FakePublisher(log, fail_ids={"2"}, reject_ids={"3"})
    publisher.gate.set()
    puller, metrics = await run(source, publisher, POLICY)
    try:
        await asyncio.wait_for(source.settled.wait(), 5)
    finally:
        await puller.stop(1)
    assert sorted(source.acked) == ["ack-1", "ack-3", "ack-4"]
    assert source.modacks == [(["ack-2"], 0)]
    assert log.index("publish:1") < log.index("ack:ack-1")
    assert log.index("dead:3") < log.index("ack:ack-3")
    assert log.index("dead:4") < log.index("ack:ack-4")
    details = {d[0]["messageId"]: (d[1], d[2]) for d in publisher.dead}
    assert details["3"] == ("too_large", "pubsub message 3: record too large")
    assert details["4"][0] == "malformed"
    assert "pubsub message 4" in details["4"][1]
    value = metrics.registry.get_sample_value
    assert value("mdm_broker_amapi_messages_total", {"outcome": "acked"}) == 3
    assert value("mdm_broker_amapi_messages_total", {"outcome": "dead_lettered"}) == 2
    assert value("mdm_broker_amapi_messages_total", {"outcome": "nacked"}) == 1
    assert value("mdm_broker_amapi_ack_latency_seconds_count") == 3


async def test_lease_extended_while_publish_is_slow_then_acked() -> None:
    log: list[str] = []
    source = FakeLeasedSource([[received("1"), received("2")]], log, expected=2)
    publisher = FakePublisher(log)
    policy = LeasePolicy(
        ack_deadline_s=0.3,
        lease_extension_s=30,
        extend_before_s=0.25,
        ack_margin_s=0.05,
        max_lease_s=600.0,
        api_timeout_s=1.0,
    )
    puller, metrics = await run(source, publisher, policy)
    try:
        await asyncio.wait_for(source.extended.wait(), 5)  # publish held: lease extended
        assert source.acked == []
        publisher.gate.set()
        await asyncio.wait_for(source.settled.wait(), 5)
    finally:
        await puller.stop(1)
    assert sorted(source.acked) == ["ack-1", "ack-2"]
    assert source.modacks[0] == (["ack-1", "ack-2"], 30)
    extended = metrics.registry.get_sample_value(
        "mdm_broker_amapi_modify_ack_deadline_total", {"kind": "extend"}
    )
    assert extended is not None
    assert extended >= 2


async def test_published_but_lease_ran_out_is_not_acked_and_counted() -> None:
    now = [1000.0]
    log: list[str] = []
    source = FakeLeasedSource([[received("1"), received("2")]], log, clock=lambda: now[0])
    publisher = FakePublisher(log)
    policy = LeasePolicy(
        ack_deadline_s=10.0,
        lease_extension_s=30,
        extend_before_s=3.0,
        ack_margin_s=1.0,
        max_lease_s=0.5,  # no extension allowed: the lease is the first 10 s
        api_timeout_s=1.0,
    )
    puller, metrics = await run(source, publisher, policy, clock=lambda: now[0])
    try:
        await asyncio.wait_for(publisher.held.wait(), 5)
        now[0] += 9.5  # within the deadline, but inside the 1 s ack margin
        publisher.gate.set()
    finally:
        await puller.stop(5)  # lets the batch being published finish
    assert "publish:1" in log
    assert source.acked == []
    assert source.modacks == []  # neither extended (max_lease_s) nor nacked (published)
    value = metrics.registry.get_sample_value
    assert value("mdm_broker_amapi_ack_deadline_missed_total") == 2
    assert value("mdm_broker_amapi_messages_not_acked_total", {"reason": "budget_exceeded"}) == 2
