"""Pub/Sub + AMAPI simulator -> broker (in-process BrokerApp, 4 pullers) -> real Kafka."""

from __future__ import annotations

import base64
import collections
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.events import EventType
from simulators.android import amapi_resources
from simulators.android.pubsub_runner import PubsubSimulatorServer
from tests.e2e.android.amapi_support import amapi_settings, pubsub_simulator_with_key
from tests.e2e.android.support import RecordingPublisher, read_events, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 10_000
AMAPI_TYPES = {
    EventType.DEVICE_ENROLLED,
    EventType.DEVICE_STATUS_REPORTED,
    EventType.DEVICE_COMMAND_COMPLETED,
    EventType.DEVICE_COMMAND_FAILED,
    EventType.DEVICE_USAGE_LOGGED,
    EventType.ENTERPRISE_UPGRADED,
}


async def _metrics(app: BrokerApp) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{app.base_url}/metrics") as resp:
        return await resp.text()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_ten_thousand_messages_of_every_type_four_pullers(
    tmp_path: Path, broker_settings: BrokerSettings, kafka_bootstrap: str
) -> None:
    key = tmp_path / "sa.json"
    sim = pubsub_simulator_with_key(key)
    generated = amapi_resources.generate(TOTAL, enterprises=5, devices=200, seed=7)
    async with PubsubSimulatorServer(sim) as server:
        settings = broker_settings.model_copy(
            update={"amapi": amapi_settings(server, key, pullers=4)}
        )
        app = BrokerApp(settings, factories=factories(settings, ["amapi"]))
        publisher = RecordingPublisher(settings.kafka, app.health, app.metrics)
        app.publisher = publisher
        await app.start()
        try:
            ids = [sim.publish_notification(kind, resource) for kind, resource in generated]
            assert await wait_until(lambda: sim.state.stats.acked >= TOTAL, 180), sim.stats()
            metrics_text = await _metrics(app)
        finally:
            await app.stop()

    stats = sim.state.stats
    assert stats.acked == TOTAL, sim.stats()
    assert stats.pull_requests >= 4
    usage_items = {
        mid: len(r["usageLogEvents"])
        for mid, (kind, r) in zip(ids, generated, strict=True)
        if kind == amapi_resources.USAGE_LOGS
    }
    expected = {i for i in ids if i not in usage_items} | {
        f"{mid}:{n}" for mid, count in usage_items.items() for n in range(count)
    }

    # No message was acked before Kafka acked every event built from it.
    for record in sim.state.acked:
        event_ids = (
            [f"{record.message_id}:{n}" for n in range(usage_items[record.message_id])]
            if record.message_id in usage_items
            else [record.message_id]
        )
        for event_id in event_ids:
            assert event_id in publisher.acked_at, "acked but never published"
            assert publisher.acked_at[event_id] <= record.acked_at

    events = await read_events(kafka_bootstrap, settings.kafka.events_topic, len(expected))
    assert {e.id for e in events} == expected
    assert {e.type for e in events} == AMAPI_TYPES
    assert {e.vendortype for e in events} == set(amapi_resources.ALL_TYPES)
    for event in events:
        assert event.partitionkey == f"android:{event.tenant}:{event.subject or '-'}"
        assert event.data["pubsub"]["message_id"] == event.id.split(":")[0]

    # >=: a message whose lease ran out under load is acked again on redelivery (same ids)
    assert _metric(metrics_text, "mdm_broker_amapi_ack_latency_seconds_count") >= TOTAL
    assert 'mdm_broker_amapi_ack_latency_seconds_bucket{le="10.0"}' in metrics_text
    assert _metric(metrics_text, 'mdm_broker_amapi_messages_total{outcome="acked"}') >= TOTAL


async def test_undecodable_message_is_dead_lettered_with_its_id_then_acked(
    tmp_path: Path, broker_settings: BrokerSettings, kafka_bootstrap: str
) -> None:
    key = tmp_path / "sa.json"
    sim = pubsub_simulator_with_key(key)
    good = base64.b64encode(orjson.dumps(amapi_resources.device("LC01", "3f01"))).decode()
    async with PubsubSimulatorServer(sim) as server:
        settings = broker_settings.model_copy(update={"amapi": amapi_settings(server, key)})
        app = BrokerApp(settings, factories=factories(settings, ["amapi"]))
        await app.start()
        try:
            bad_base64, bad_json, ok = sim.state.publish(
                sim.config.topic_path,
                [
                    {
                        "data": "%%% not base64 %%%",
                        "attributes": {"notificationType": "ENROLLMENT"},
                    },
                    {
                        "data": base64.b64encode(b"{not json").decode(),
                        "attributes": {"notificationType": "STATUS_REPORT"},
                    },
                    {"data": good, "attributes": {"notificationType": "ENROLLMENT"}},
                ],
            )
            assert await wait_until(lambda: sim.state.stats.acked >= 3, 30), sim.stats()
        finally:
            await app.stop()
    assert sorted(r.message_id for r in sim.state.acked) == sorted([bad_base64, bad_json, ok])

    consumer = AIOKafkaConsumer(
        settings.kafka.dlq_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records: list[Any] = []
        while len(records) < 2:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "dead letters missing"
            records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    by_id = {orjson.loads(r.value)["messageId"]: r for r in records}
    assert set(by_id) == {bad_base64, bad_json}
    for message_id, record in by_id.items():
        headers = {k: v.decode() for k, v in record.headers}
        assert message_id in headers["dlq-detail"], headers
    events = await read_events(kafka_bootstrap, settings.kafka.events_topic, 1)
    assert [e.id for e in events] == [ok]
    assert collections.Counter(e.type for e in events) == {EventType.DEVICE_ENROLLED: 1}
