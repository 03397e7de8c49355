"""1,000 operations across 100 devices at once: simulator -> `mdm-broker run` -> real Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    all_closed,
    check_delivery,
    create_all_topics,
    eventually,
    kapua_section,
    read_events,
    start_broker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_thousand_operations_on_hundred_devices(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    async with KapuaSimulator(SimConfig(devices=100, token_ttl_s=8.0)) as sim:
        kapua = kapua_section(
            sim,
            topic_prefix,
            watch_topic_enabled=False,
            discovery_interval_s=1.0,
            poll_interval_min_s=0.5,
            poll_interval_max_s=1.5,
            operation_check_interval_s=3.0,
            max_requests_per_s=700,
            max_concurrent_requests=48,
            instance_id="scale-1",
        )
        await create_all_topics(kafka_settings)
        broker = await start_broker(tmp_path, kafka_settings, kapua, "broker")
        try:
            ops = [
                sim.state.start_operation(
                    "AQ",
                    device,
                    steps=4,
                    step_interval_s=1.0,
                    fail=i % 10 == 9,
                    jitter_s=0.5,
                    start_delay_s=1.0,
                )
                for i, device in enumerate(list(sim.state.devices["AQ"]) * 10)
            ]
            assert len(ops) == 1000
            assert len({op.doc["deviceId"] for op in ops}) == 100

            async def done() -> bool:
                return all_closed(sim) and await broker.closed() == len(ops)

            await eventually(done, 180, "1000 operations closed and published", every_s=1.0)
            refreshes = await broker.value("mdm_broker_kapua_token_events_total", event="refresh")
        finally:
            assert await broker.stop() == 0, (tmp_path / "broker.log").read_text()[-3000:]
        records = await read_events(kafka_settings)
        counts = check_delivery(sim, records)
        assert counts["terminal"] == 1000
        assert counts["returned"] >= 1000
        failed = [r for r in records if r.event.type.value == "mdm.operation.failed"]
        assert len({r.event.id for r in failed}) == 100
        assert refreshes >= 1  # 8 s tokens in a longer run: refreshed ahead of expiry
        # one uninterrupted instance: nothing published twice
        assert counts["duplicates"] == 0, counts
