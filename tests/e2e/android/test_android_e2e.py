"""Simulator -> broker (in-process BrokerApp, 4 pullers) -> real Kafka -> plain consumer."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from adapters.android.normalize import notification_id
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from simulators.android.notifications import ALL_TYPES, generate
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

TOTAL = 10_000


async def test_ten_thousand_mixed_notifications_four_pullers(
    tmp_path: Path, broker_settings: BrokerSettings, kafka_bootstrap: str
) -> None:
    key = tmp_path / "sa.json"
    sim = simulator_with_key(
        key, SimulatorConfig(hold_s=2.0, max_set_size=100, rate_limit_qpm=None)
    )
    notifications = generate(TOTAL, enterprises=5, seed=7)
    expected = {notification_id(n) for n in notifications}
    assert len(expected) == TOTAL

    async with SimulatorServer(sim) as server:
        settings = broker_settings.model_copy(
            update={"android": android_settings(server, key, pullers=4)}
        )
        app = BrokerApp(settings, factories=factories(settings, ["android"]))
        publisher = RecordingPublisher(settings.kafka, app.health, app.metrics)
        app.publisher = publisher
        await app.start()
        try:
            sim.pool.enqueue(notifications)
            await wait_until(lambda: sim.pool.stats.acked_notifications >= TOTAL, 120)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{app.base_url}/metrics") as resp,
            ):
                metrics_text = await resp.text()
        finally:
            await app.stop()

    stats = sim.pool.stats
    assert stats.acked_notifications == TOTAL, sim.stats()
    assert stats.acked_sets >= TOTAL // 100
    # Several pullers were served concurrently: the sets did not all go through one request.
    assert sim.pull_requests >= 4

    # No set was acked before Kafka acked every one of its records.
    for record in sim.pool.acked:
        for n in record.notifications:
            event_id = notification_id(n)
            assert event_id in publisher.acked_at, "set acked but its event never published"
            assert publisher.acked_at[event_id] <= record.acked_at

    events = await read_events(kafka_bootstrap, settings.kafka.events_topic, TOTAL)
    assert {e.id for e in events} == expected
    assert {e.vendortype for e in events} == set(ALL_TYPES)
    assert all(e.source.startswith("/android/enterprises/LC") for e in events)

    # The ack-latency histogram is exposed and counted every acked set.
    count_line = next(
        line
        for line in metrics_text.splitlines()
        if line.startswith("mdm_broker_android_ack_latency_seconds_count")
    )
    assert float(count_line.split()[-1]) == stats.acked_sets
    assert 'mdm_broker_android_ack_latency_seconds_bucket{le="20.0"}' in metrics_text
