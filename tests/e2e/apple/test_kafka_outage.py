"""Kafka stopped while the simulator delivers: 503s, no 2xx for anything not in Kafka; once
Kafka is back, the simulator's own retries land every notification."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.app.config import BrokerSettings
from broker.devtools.devkafka import KafkaCluster
from broker.topics import create_topics
from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig
from tests.e2e.apple.helpers import (
    Record,
    apple_settings,
    control,
    events_of,
    read_until,
    running_broker,
    sample,
    subscribe,
    wait_idle,
)
from tests.kafka_helpers import outage_kafka_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

COUNT = 20


def _is_2xx(result: str) -> bool:
    return result.isdigit() and 200 <= int(result) < 300


async def _first_attempts_done(sim: AppleSimulator, ids: set[str]) -> list[dict[str, Any]]:
    for _ in range(200):  # bounded: 200 x 0.1 s
        records = [
            d
            for d in (await control(sim, "GET", "/_sim/deliveries"))["deliveries"]
            if d["notificationId"] in ids
        ]
        if len(records) == len(ids) and all(d["attempts"] for d in records):
            return records
        await asyncio.sleep(0.1)
    raise AssertionError("the simulator did not attempt every delivery")


async def test_outage_answers_503_and_apple_retries_land_everything(
    own_kafka: KafkaCluster,
) -> None:
    kafka = outage_kafka_settings(own_kafka.bootstrap_servers, "apple-outage")
    await create_topics(kafka)
    # 3 attempts spread over 30 s: the first fails during the outage, later ones land.
    sim = AppleSimulator(SimConfig(), Faults(retry_window_s=30.0, attempt_timeout_s=10.0), seed=3)
    await sim.start()
    try:
        base = BrokerSettings(kafka=kafka, http={"port": 0})
        async with running_broker(base, apple_settings(sim, retry_after_s=5)) as app:
            await subscribe(sim, app)
            await asyncio.to_thread(own_kafka.stop_node, 0, hard=True)
            notes = [
                {
                    "notificationType": "ASSET_COUNT",
                    "notificationId": f"outage-{i}",
                    "notification": {"adamId": str(i), "countDelta": 1, "pricingParam": "STDQ"},
                }
                for i in range(COUNT)
            ]
            ids = {str(n["notificationId"]) for n in notes}
            await control(sim, "POST", "/_sim/notifications", {"notifications": notes}, expect=202)
            during = await _first_attempts_done(sim, ids)
            # While Kafka is down nothing is acknowledged to Apple.
            assert all(not _is_2xx(a) for d in during for a in d["attempts"])
            assert {a for d in during for a in d["attempts"]} == {"503"}
            assert (
                sample(app, "mdm_broker_rejected_total", vendor="apple", reason="kafka_unavailable")
                >= COUNT
            )

            await asyncio.to_thread(own_kafka.restart_node, 0)
            await wait_idle(sim, timeout_s=90)

            def all_there(records: list[Record]) -> bool:
                return ids <= {e.id for e in events_of(records)}

            records = await read_until(kafka.bootstrap_servers, kafka.events_topic, all_there, 60)
    finally:
        await sim.stop()

    after = [d for d in (await _deliveries(sim)) if d["notificationId"] in ids]
    assert all(d["outcome"] == "delivered" for d in after)
    assert all(d["attempts"][0] == "503" and _is_2xx(d["attempts"][-1]) for d in after)
    assert ids <= {e.id for e in events_of(records)}


async def _deliveries(sim: AppleSimulator) -> list[dict[str, Any]]:
    return [record.wire() for record in sim.deliverer.records.values()]
