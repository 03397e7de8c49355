"""Kafka killed and restarted while the Kapua adapter polls: cursors freeze, nothing is lost."""

from __future__ import annotations

import asyncio

import pytest

from adapters.kapua.adapter import KapuaAdapter
from broker.devtools.devkafka import KafkaCluster
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    all_closed,
    check_delivery,
    create_all_topics,
    eventually,
    kapua_app,
    kapua_section,
    read_events,
    wait_owning,
)
from tests.kafka_helpers import outage_kafka_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_kafka_outage_freezes_cursors_and_loses_nothing(own_kafka: KafkaCluster) -> None:
    kafka = outage_kafka_settings(own_kafka.bootstrap_servers, "kapua-outage")
    await create_all_topics(kafka)
    async with KapuaSimulator(SimConfig(devices=5)) as sim:
        kapua = kapua_section(sim, "kapua-outage", watch_topic_enabled=False)
        app = kapua_app(kafka, kapua)
        await app.start()
        adapter = app.adapters[0]
        assert isinstance(adapter, KapuaAdapter)
        try:
            await wait_owning([adapter])
            # Operations outlive the outage (a Kafka restart can take 10 s and more on a loaded
            # machine), so rows returned during it are read again later.
            ops = [
                sim.state.start_operation("AQ", d, steps=60, step_interval_s=0.5, fail=False)
                for d in list(sim.state.devices["AQ"]) * 4
            ]

            async def progressing() -> bool:
                return len(sim.state.returned) >= 2 * len(ops)

            await eventually(progressing, 30, "rows published before the outage")
            await asyncio.to_thread(own_kafka.stop_node, 0, True)

            async def unhealthy() -> bool:
                return not app.health.healthy

            await eventually(unhealthy, 30, "Kafka marked unhealthy", every_s=0.2)
            frozen = sum(len(op.seen) for op in adapter.scheduler.ops.values())
            await asyncio.sleep(2.0)  # rows keep coming, but no cursor advances without an ack
            assert sum(len(op.seen) for op in adapter.scheduler.ops.values()) == frozen
            await asyncio.to_thread(own_kafka.restart_node, 0)

            async def finished() -> bool:
                closed = app.metrics.registry.get_sample_value(
                    "mdm_broker_kapua_operations_closed_total", {"outcome": "completed"}
                )
                return all_closed(sim) and closed == len(ops)

            await eventually(finished, 90, "all operations closed after Kafka came back", 1.0)
        finally:
            await app.stop()
        records = await read_events(kafka)
        counts = check_delivery(sim, records)
    assert counts["terminal"] == len(ops)
