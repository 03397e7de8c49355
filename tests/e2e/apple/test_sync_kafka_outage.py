"""Kafka down longer than Apple's retry horizon while the webhook answers 503: every change Apple
gave up on reaches Kafka as a synced event once Kafka is back, without restarting the broker."""

from __future__ import annotations

import pytest

from broker.app.config import BrokerSettings
from broker.devtools.devkafka import KafkaCluster
from broker.topics import create_topics
from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig
from tests.e2e.apple.helpers import (
    TENANT,
    apple_adapter,
    control,
    running_broker,
    sample,
    subscribe,
    wait_idle,
)
from tests.e2e.apple.sync_helpers import (
    check_synced,
    create_users,
    perform_changes,
    read_all,
    sync_apple_settings,
    wait_sync,
)
from tests.kafka_helpers import outage_kafka_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_outage_beyond_retry_horizon_recovered_by_narrow_sync(
    own_kafka: KafkaCluster,
) -> None:
    kafka = outage_kafka_settings(own_kafka.bootstrap_servers, "sync-outage")
    await create_topics(kafka)
    sim = AppleSimulator(SimConfig(), Faults(retry_window_s=1.0, attempt_timeout_s=5.0), seed=5)
    await sim.start()
    try:
        base = BrokerSettings(kafka=kafka, http={"port": 0})
        async with running_broker(base, sync_apple_settings(sim, retry_s=1.0)) as app:
            await subscribe(sim, app)
            users = await create_users(sim, 20)
            await wait_idle(sim)
            await wait_sync(app, "initial")

            own_kafka.stop_node(0, hard=True)
            before = (await control(sim, "GET", "/_sim/deliveries"))["summary"].get("dropped", 0)
            done = await perform_changes(sim, users)
            await wait_idle(sim, timeout_s=120)
            summary = (await control(sim, "GET", "/_sim/deliveries"))["summary"]
            assert summary["dropped"] - before == 2 + 20 + 5
            assert (
                sample(app, "mdm_broker_rejected_total", vendor="apple", reason="kafka_unavailable")
                >= 3 * 27
            )
            assert TENANT in apple_adapter(app).gaps.windows(), "the 503s opened no gap"
            own_kafka.restart_node(0)
            # The 503s opened a gap; if the outage also outlasted the heartbeat before the group
            # rebalanced, the owner sees a restart gap as well (merged, reason "restart").
            report = await wait_sync(app, "gap", "restart", timeout_s=120)
            assert report.records["assignments"] >= 200
            opened = sum(
                sample(app, "mdm_broker_apple_sync_gaps_opened_total", reason=r)
                for r in ("gap", "restart")
            )
            assert opened >= 1
        events = await read_all(kafka.bootstrap_servers, kafka.events_topic)
    finally:
        await sim.stop()
    check_synced(events, sim, done)
