"""Kafka stopped for longer than the ack budget (own single-node cluster, stopped and restarted).

Sets in hand when Kafka dies are published late (after the restart), beyond the budget: they are
NOT acknowledged and the simulator redelivers them after its ack deadline. The other pullers park
while Kafka is unhealthy, so notifications enqueued meanwhile stay pending at the vendor. After
recovery everything lands; nothing is lost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.android.normalize import notification_id
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.devtools.devkafka import KafkaCluster
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import SimulatorConfig
from tests.e2e.android.support import (
    RecordingPublisher,
    android_settings,
    read_events,
    simulator_with_key,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BEFORE, DURING = 100, 400


async def test_kafka_down_beyond_budget_sets_not_acked_redelivered_all_land(
    tmp_path: Path, own_kafka: KafkaCluster, topic_prefix: str
) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=own_kafka.bootstrap_servers,
        events_topic=f"{topic_prefix}.events",
        dlq_topic=f"{topic_prefix}.events.dlq",
        state_topic=f"{topic_prefix}.state",
        partitions=3,
        publish_timeout_s=40.0,  # Kafka "slow": the publish outlives the outage
        request_timeout_s=5.0,
        health_probe_interval_s=0.5,
    )
    await create_topics(kafka)
    key = tmp_path / "sa.json"
    sim = simulator_with_key(
        key, SimulatorConfig(hold_s=0.5, ack_deadline_s=3.0, max_set_size=50, rate_limit_qpm=None)
    )
    first = generate(BEFORE, seed=1)
    in_hand = generate(2, seed=2, first_seq=BEFORE)
    later = generate(DURING, seed=3, first_seq=BEFORE + 2)
    expected = {notification_id(n) for n in first + in_hand + later}

    async with SimulatorServer(sim) as server:
        settings = BrokerSettings(
            kafka=kafka,
            http={"host": "127.0.0.1", "port": 0},
            android=android_settings(server, key, pullers=4, ack_budget_s=2.0),
        )
        app = BrokerApp(settings, factories=factories(settings, ["android"]))
        publisher = RecordingPublisher(settings.kafka, app.health, app.metrics)
        app.publisher = publisher
        await app.start()
        registry = app.metrics.registry
        try:
            sim.pool.enqueue(first)
            assert await wait_until(lambda: sim.pool.stats.acked_notifications >= BEFORE, 30)

            # Two pullers take a notification each and are about to publish when Kafka dies.
            sets_before = sim.pool.stats.delivered_sets
            publisher.gate.clear()
            sim.pool.enqueue(in_hand)
            assert await wait_until(
                lambda: (
                    sim.pool.stats.delivered_notifications == BEFORE + len(in_hand)
                    and publisher.waiting == sim.pool.stats.delivered_sets - sets_before
                ),
                10,
            )
            busy = publisher.waiting
            await asyncio.to_thread(own_kafka.stop_node, 0, True)
            publisher.gate.set()
            assert await wait_until(lambda: not app.health.healthy, 30)
            # Every puller not busy with a set parks: nothing is pulled while Kafka is unhealthy.
            assert await wait_until(
                lambda: (
                    (registry.get_sample_value("mdm_broker_android_pullers_parked") or 0)
                    >= 4 - busy
                ),
                10,
            )
            sim.pool.enqueue(later)
            # The sets in hand pass their ack deadline and return to the pending pool.
            assert await wait_until(lambda: sim.pool.stats.expired_sets >= 1, 30)
            assert sim.pool.stats.acked_notifications == BEFORE
            assert sim.pool.stats.delivered_notifications == BEFORE + len(in_hand)

            await asyncio.to_thread(own_kafka.restart_node, 0)
            assert await wait_until(
                lambda: sim.pool.stats.acked_notifications >= len(expected), 90
            ), sim.stats()
        finally:
            await app.stop()

    stats = sim.pool.stats
    assert stats.redelivered_notifications >= 1
    assert stats.expired_sets >= 1
    missed = registry.get_sample_value("mdm_broker_android_ack_deadline_missed_total") or 0
    not_acked = registry.get_sample_value(
        "mdm_broker_android_sets_not_acked_total", {"reason": "budget_exceeded"}
    )
    assert missed >= 1
    assert not_acked == missed
    # Every acked set's records were acked by Kafka before the set's ack.
    for record in sim.pool.acked:
        for n in record.notifications:
            assert publisher.acked_at[notification_id(n)] <= record.acked_at

    events = await read_events(own_kafka.bootstrap_servers, kafka.events_topic, len(expected))
    assert {e.id for e in events} == expected
