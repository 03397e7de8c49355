"""`mdm-broker dlq replay` after a mapping fix (issue 10, item 9), end to end on a real Kafka.

A deliberately broken mapper dead-letters every productApproval notification (the set is still
acked: the input is stored). After the "fix" (the real normalizer), `dlq replay` publishes each
as the event with the id it would have had; an idempotent consumer (broker.consumer) processes
it once, and a second replay gives it nothing new (only skipped duplicates).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapters.android.adapter import AndroidAdapter
from adapters.android.normalize import normalize_notification, notification_id
from broker.adapter import Adapter, AdapterContext
from broker.app.config import BrokerSettings
from broker.app.runtime import BrokerApp
from broker.consumer import IdempotentConsumer, InMemoryStore
from broker.events import CanonicalEvent
from broker.topics import create_topics
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import SimulatorConfig
from tests.e2e.android.support import android_settings, simulator_with_key, wait_until
from tests.integration.consumer.helpers import (
    consumer_settings,
    end_offsets,
    wait_all_committed,
)
from tests.kafka_helpers import read_records

pytestmark = pytest.mark.kafka


def broken_mapper(notification: Any) -> CanonicalEvent:
    """The real normalizer with a mapping bug for productApproval."""
    if notification.get("notificationType") == "productApproval":
        raise KeyError("approved")  # e.g. a renamed field nobody caught
    return normalize_notification(notification)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "dlq", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_replay_after_mapping_fix_is_idempotent_downstream(
    tmp_path: Path, broker_settings: BrokerSettings, kafka_bootstrap: str
) -> None:
    kafka = broker_settings.kafka
    await create_topics(kafka)
    key = tmp_path / "sa.json"
    sim = simulator_with_key(key, SimulatorConfig(hold_s=0.5, max_set_size=10, rate_limit_qpm=None))
    notifications = generate(24, enterprises=2, types=("productApproval", "appUpdate"), seed=5)
    broken = [n for n in notifications if n["notificationType"] == "productApproval"]
    assert 0 < len(broken) < len(notifications)

    async with SimulatorServer(sim) as server:
        settings = broker_settings.model_copy(
            update={"android": android_settings(server, key, pullers=2)}
        )

        def android(ctx: AdapterContext) -> Adapter:
            return AndroidAdapter(ctx, settings.android, normalize=broken_mapper)

        app = BrokerApp(settings, factories=[android])
        await app.start()
        try:
            sim.pool.enqueue(notifications)
            acked = await wait_until(lambda: sim.pool.stats.acked_notifications >= 24, 60)
            assert acked, sim.stats()
        finally:
            await app.stop()
    letters = await read_records(kafka_bootstrap, kafka.dlq_topic, len(broken))
    assert len(letters) == len(broken)
    assert {dict(r.headers)["dlq-reason"] for r in letters} == {b"schema"}

    handled: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        handled.append(event.id)

    group = f"{kafka.events_topic}-downstream"
    registry = CollectorRegistry()
    stop = asyncio.Event()
    consumer = IdempotentConsumer(
        consumer_settings(kafka_bootstrap, kafka.events_topic, group),
        InMemoryStore(),
        handler,
        registry=registry,
    )
    task = asyncio.create_task(consumer.run_until(stop))
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
        f'events_topic = "{kafka.events_topic}"\ndlq_topic = "{kafka.dlq_topic}"\n'
        f'state_topic = "{kafka.state_topic}"\n'
    )
    try:
        before = await end_offsets(kafka_bootstrap, kafka.events_topic)
        dry = await asyncio.to_thread(_cli, config, "replay", "--vendor", "android", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.count("would_replay") == len(broken)
        assert await end_offsets(kafka_bootstrap, kafka.events_topic) == before  # wrote nothing

        listed = await asyncio.to_thread(_cli, config, "list", "--reason", "schema", "--json")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.count('"vendor":"android"') == len(broken)

        first = await asyncio.to_thread(_cli, config, "replay", "--vendor", "android")
        assert first.returncode == 0, first.stderr
        assert first.stdout.count(" replayed ") == len(broken)
        await wait_all_committed(kafka_bootstrap, group, kafka.events_topic, timeout_s=60)
        # Every notification is processed once, the fixed ones under the ids they should have had.
        assert sorted(handled) == sorted(notification_id(n) for n in notifications)

        second = await asyncio.to_thread(_cli, config, "replay", "--vendor", "android")
        assert second.returncode == 0, second.stderr
        await wait_all_committed(kafka_bootstrap, group, kafka.events_topic, timeout_s=60)
    finally:
        stop.set()
        await task
    assert sorted(handled) == sorted(notification_id(n) for n in notifications)  # nothing new
    skipped = registry.get_sample_value(
        "mdm_broker_consumer_duplicates_skipped_total", {"group": group}
    )
    assert skipped == len(broken)
