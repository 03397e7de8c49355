"""AMAPI faults for real: the broker SIGKILLed between publish and ack; Kafka down past the lease.

Both run simulator -> broker -> real Kafka; messages that are not acked come back from the
simulated Pub/Sub with the same messageId (so the same event ids) and a higher deliveryAttempt.
"""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path
from typing import Any

import pytest

from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.devtools.devkafka import KafkaCluster
from broker.events import CanonicalEvent
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.android import amapi_resources
from simulators.android.pubsub_runner import PubsubSimulatorServer
from simulators.android.pubsub_server import PubsubSimConfig, PubsubSimulator
from tests.e2e.android.amapi_support import amapi_settings, pubsub_simulator_with_key
from tests.e2e.android.support import (
    RecordingPublisher,
    handled_by_idempotent_consumer,
    read_events,
    wait_until,
)
from tests.fault.android.broker_process import kafka_http_toml, start_broker, stop

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 300


def _write_config(
    path: Path, kafka: KafkaSettings, server: PubsubSimulatorServer, key: Path
) -> None:
    path.write_text(
        kafka_http_toml(kafka)
        + f"""
[amapi]
enabled = true
subscription = "{server.subscription}"
service_account_file = "{key}"
token_url = "{server.token_url}"
api_base_url = "{server.api_base_url}"
pullers = 4
ack_deadline_s = 3.0
extend_before_s = 1.5
ack_margin_s = 0.5
pull_timeout_s = 10.0
api_timeout_s = 2.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
"""
    )


def _publish_all(sim: PubsubSimulator, generated: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [sim.publish_notification(kind, resource) for kind, resource in generated]


async def test_sigkill_between_publish_and_ack_redelivers_with_same_ids(
    tmp_path: Path, kafka_settings: KafkaSettings, kafka_bootstrap: str
) -> None:
    await create_topics(kafka_settings)
    key = tmp_path / "sa.json"
    sim = pubsub_simulator_with_key(
        key, PubsubSimConfig(ack_deadline_s=3, hold_s=0.5, rate_limit_qps=None)
    )
    sim.set_ack_mode("blackhole")
    generated = amapi_resources.generate(
        TOTAL, types=(amapi_resources.ENROLLMENT, amapi_resources.COMMAND), seed=11
    )
    config, log_path = tmp_path / "broker.toml", tmp_path / "broker.log"

    async with PubsubSimulatorServer(sim) as server:
        _write_config(config, kafka_settings, server, key)
        first = start_broker(config, log_path)
        try:
            ids = _publish_all(sim, generated)
            expected = set(ids)
            # Everything published to Kafka; acks sent but never applied.
            first_pass = await read_events(
                kafka_bootstrap, kafka_settings.events_topic, TOTAL, timeout_s=60
            )
            assert {e.id for e in first_pass} == expected, log_path.read_text()[-3000:]
            assert await wait_until(lambda: sim.blackholed_acks > 0, 10)
        finally:
            assert await stop(first, signal.SIGKILL) == -signal.SIGKILL
        assert sim.state.stats.acked == 0

        sim.set_ack_mode("normal")
        second = start_broker(config, log_path)
        try:
            assert await wait_until(lambda: sim.state.stats.acked >= TOTAL, 60), sim.stats()
        finally:
            assert await stop(second, signal.SIGTERM) == 0, log_path.read_text()[-3000:]

    # Redelivered with the same messageId and a growing deliveryAttempt.
    assert set(sim.state.redelivered_ids) == expected
    assert {r.message_id for r in sim.state.acked} == expected
    assert min(r.delivery_attempt for r in sim.state.acked) >= 2

    records = await read_events(kafka_bootstrap, kafka_settings.events_topic, TOTAL)
    counts = collections.Counter(e.id for e in records)
    assert set(counts) == expected
    assert all(c >= 2 for c in counts.values())  # published by both brokers, same ids
    by_id: dict[str, list[CanonicalEvent]] = collections.defaultdict(list)
    for event in records:
        by_id[event.id].append(event)
    for copies in by_id.values():
        assert all(c == copies[0] for c in copies)  # identical content and key

    # An idempotent consumer handles each message once.
    handled = await handled_by_idempotent_consumer(
        kafka_settings, kafka_bootstrap, TOTAL, len(records)
    )
    assert set(handled) == expected
    assert set(handled.values()) == {1}


BEFORE, IN_HAND, DURING = 100, 2, 200


async def test_kafka_down_beyond_ack_deadline_extends_nacks_redelivers_all_land(
    tmp_path: Path, own_kafka: KafkaCluster, topic_prefix: str
) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=own_kafka.bootstrap_servers,
        events_topic=f"{topic_prefix}.events",
        dlq_topic=f"{topic_prefix}.events.dlq",
        state_topic=f"{topic_prefix}.state",
        partitions=3,
        publish_timeout_s=8.0,  # longer than the 3 s ack deadline: leases must be extended
        request_timeout_s=5.0,
        health_probe_interval_s=0.5,
    )
    await create_topics(kafka)
    key = tmp_path / "sa.json"
    sim = pubsub_simulator_with_key(
        key, PubsubSimConfig(ack_deadline_s=3, hold_s=0.5, rate_limit_qps=None)
    )
    async with PubsubSimulatorServer(sim) as server:
        settings = BrokerSettings(
            kafka=kafka,
            http={"host": "127.0.0.1", "port": 0},
            amapi=amapi_settings(
                server,
                key,
                ack_deadline_s=3.0,
                extend_before_s=1.5,
                ack_margin_s=0.5,
                lease_extension_s=3,
            ),
        )
        app = BrokerApp(settings, factories=factories(settings, ["amapi"]))
        publisher = RecordingPublisher(settings.kafka, app.health, app.metrics)
        app.publisher = publisher
        await app.start()
        registry = app.metrics.registry
        try:
            ids = _publish_all(sim, amapi_resources.generate(BEFORE, seed=1))
            assert await wait_until(lambda: sim.state.stats.acked >= BEFORE, 30), sim.stats()

            # Pullers take the next messages and are about to publish when Kafka dies.
            publisher.gate.clear()
            in_hand = _publish_all(sim, amapi_resources.generate(IN_HAND, seed=2, first_seq=BEFORE))
            assert await wait_until(
                lambda: sim.state.stats.delivered == BEFORE + IN_HAND and publisher.waiting >= 1,
                10,
            )
            await asyncio.to_thread(own_kafka.stop_node, 0, True)
            publisher.gate.set()
            assert await wait_until(lambda: not app.health.healthy, 30)
            later = _publish_all(
                sim, amapi_resources.generate(DURING, seed=3, first_seq=BEFORE + IN_HAND)
            )
            # Publishing is slow: the leases of the messages in hand are extended past the
            # deadline, then the publish times out and they are nacked.
            assert await wait_until(lambda: sim.state.stats.nacked >= IN_HAND, 30), sim.stats()
            assert sim.state.stats.deadline_extensions >= IN_HAND
            assert sim.state.stats.acked == BEFORE

            await asyncio.to_thread(own_kafka.restart_node, 0)
            total = BEFORE + IN_HAND + DURING
            assert await wait_until(lambda: sim.state.stats.acked >= total, 90), sim.stats()
        finally:
            await app.stop()

    extended = registry.get_sample_value(
        "mdm_broker_amapi_modify_ack_deadline_total", {"kind": "extend"}
    )
    nacked = registry.get_sample_value(
        "mdm_broker_amapi_modify_ack_deadline_total", {"kind": "nack"}
    )
    assert extended is not None
    assert extended >= IN_HAND
    assert nacked is not None
    assert nacked >= IN_HAND
    # The nacked messages came back with the same ids and a higher delivery attempt.
    assert set(in_hand) <= set(sim.state.redelivered_ids)
    attempts = {r.message_id: r.delivery_attempt for r in sim.state.acked}
    assert all(attempts[i] >= 2 for i in in_hand)
    # Every acked message's events were acked by Kafka before the message.
    published: dict[str, list[float]] = collections.defaultdict(list)
    for event_id, at in publisher.acked_at.items():
        published[event_id.split(":")[0]].append(at)
    for record in sim.state.acked:
        assert published[record.message_id]
        assert max(published[record.message_id]) <= record.acked_at

    everything = set(ids) | set(in_hand) | set(later)
    events = await read_events(own_kafka.bootstrap_servers, kafka.events_topic, len(everything))
    assert {e.id.split(":")[0] for e in events} == everything
