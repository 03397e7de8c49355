"""Kafka stopped mid-run: bounded, typed failure and /readyz 503; after restart nothing acked is lost."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from broker.app.config import BrokerSettings
from broker.app.runtime import BrokerApp
from broker.devtools.devkafka import KafkaCluster
from broker.devtools.examples import example_events
from broker.errors import PublishError
from broker.events import CanonicalEvent, EventType, decode_event
from broker.topics import create_topics
from tests.kafka_helpers import outage_kafka_settings, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _events(prefix: str, count: int) -> list[CanonicalEvent]:
    base = example_events()[EventType.ASSET_COUNT_CHANGED]
    return [base.model_copy(update={"id": f"{prefix}-{i}"}) for i in range(count)]


async def _readyz(session: aiohttp.ClientSession, app: BrokerApp) -> int:
    async with session.get(f"{app.base_url}/readyz") as response:
        return response.status


async def _wait_status(
    session: aiohttp.ClientSession, app: BrokerApp, status: int, timeout_s: float
) -> int:
    deadline = time.monotonic() + timeout_s
    current = await _readyz(session, app)
    while current != status and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        current = await _readyz(session, app)
    return current


async def test_kafka_down_raises_within_bound_then_recovers(own_kafka: KafkaCluster) -> None:
    kafka = outage_kafka_settings(own_kafka.bootstrap_servers, "outage", publish_timeout_s=3.0)
    await create_topics(kafka)
    settings = BrokerSettings(kafka=kafka, http={"port": 0})
    app = BrokerApp(settings, factories=[])
    await app.start()
    acked: list[CanonicalEvent] = []
    try:
        async with aiohttp.ClientSession() as session:
            assert await _readyz(session, app) == 200
            before = _events("before", 50)
            await app.publisher.publish(before)
            acked += before

            await asyncio.to_thread(own_kafka.stop_node, 0, hard=True)
            started = time.monotonic()
            with pytest.raises(PublishError) as info:
                await app.publisher.publish(_events("during", 10))
            elapsed = time.monotonic() - started
            # Bounded: the typed error arrives around publish_timeout_s, not "eventually".
            assert elapsed < kafka.publish_timeout_s + 2.0
            assert info.value.retriable
            assert not app.health.healthy
            assert await _readyz(session, app) == 503

            await asyncio.to_thread(own_kafka.restart_node, 0)
            assert await _wait_status(session, app, 200, timeout_s=60) == 200
            after = _events("after", 50)
            for attempt in range(20):  # leadership may take a moment to settle after restart
                try:
                    await app.publisher.publish(after)
                    break
                except PublishError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
            acked += after
    finally:
        await app.stop()

    records = await read_records(kafka.bootstrap_servers, kafka.events_topic, len(acked) + 10)
    written = {decode_event(r.value).id for r in records}
    missing = {e.id for e in acked} - written
    assert not missing, f"acked but missing after restart: {sorted(missing)[:5]}"
