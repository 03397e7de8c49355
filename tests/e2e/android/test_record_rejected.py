"""A notification whose event Kafka can never take: dead-lettered raw, the set acked, no loop."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest

from adapters.android.normalize import notification_id
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.topics import create_topics
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import SimulatorConfig
from tests.e2e.android.support import android_settings, read_events, simulator_with_key, wait_until
from tests.kafka_helpers import read_records

pytestmark = pytest.mark.kafka


async def test_oversized_notification_is_dead_lettered_and_its_set_acked(
    tmp_path: Path, broker_settings: BrokerSettings, kafka_bootstrap: str
) -> None:
    key = tmp_path / "sa.json"
    sim = simulator_with_key(key, SimulatorConfig(hold_s=0.5, max_set_size=50, rate_limit_qpm=None))
    normal = generate(30, enterprises=2, types=("productApproval",), seed=11)
    big = dict(generate(1, enterprises=1, types=("productApproval",), seed=12)[0])
    # A 30 kB product id: the notification fits the DLQ, its event (id repeated in key, subject
    # and data) does not fit the events topic.
    big["productApprovalEvent"] = {
        **big["productApprovalEvent"],
        "productId": "app:" + "p" * 30_000,
    }
    kafka = broker_settings.kafka.model_copy(update={"max_request_bytes": 60_000})
    await create_topics(kafka)  # every topic takes records up to 60,000 bytes

    async with SimulatorServer(sim) as server:
        settings = broker_settings.model_copy(
            update={"kafka": kafka, "android": android_settings(server, key, pullers=2)}
        )
        app = BrokerApp(settings, factories=factories(settings, ["android"]))
        await app.start()
        try:
            sim.pool.enqueue([*normal[:15], big, *normal[15:]])
            acked = await wait_until(lambda: sim.pool.stats.acked_notifications >= 31, 60)
            assert acked, sim.stats()
            assert app.health.healthy
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{app.base_url}/readyz") as ready,
            ):
                assert ready.status == 200  # one rejected record does not make Kafka "down"
        finally:
            await app.stop()

    events = await read_events(kafka_bootstrap, kafka.events_topic, 30)
    assert {e.id for e in events} == {notification_id(n) for n in normal}
    (letter,) = await read_records(kafka_bootstrap, kafka.dlq_topic, 1)
    assert orjson.loads(letter.value) == big  # the raw notification, unchanged
    headers = dict(letter.headers)
    assert headers["dlq-reason"] == b"record_too_large"
    assert headers["vendor"] == b"android"
    assert sim.pool.stats.acked_notifications == 31  # each acked once, nothing redelivered
    registry = app.metrics.registry
    labels = {"vendor": "android", "reason": "record_too_large"}
    assert registry.get_sample_value("mdm_broker_dead_lettered_total", labels) == 1
    assert registry.get_sample_value("mdm_broker_records_rejected_total", labels) == 1
