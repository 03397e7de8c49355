"""Tiny per-partition buffers: fetching pauses and resumes without losing, doubling or
reordering anything, and the lag gauge drains to zero (real Kafka)."""

from __future__ import annotations

import asyncio
import collections

import pytest
from prometheus_client import CollectorRegistry

from broker.consumer import IdempotentConsumer, InMemoryStore
from broker.events import CanonicalEvent
from tests.integration.consumer.helpers import (
    consumer_settings,
    create_topics,
    produce,
    records_of,
    sample_event,
    wait_all_committed,
    wait_for,
)

pytestmark = pytest.mark.kafka

EVENTS = 400


async def test_backpressure_keeps_everything_in_order_and_lag_drains(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 2, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, records_of([sample_event(n) for n in range(EVENTS)]))
    order: dict[str, list[int]] = collections.defaultdict(list)

    async def handler(event: CanonicalEvent, tx: None) -> None:
        await asyncio.sleep(0.001)
        order[event.partitionkey].append(int(event.id[1:]))

    registry = CollectorRegistry()
    settings = consumer_settings(kafka_bootstrap, topic, group, max_buffered_per_partition=4)
    consumer = IdempotentConsumer(settings, InMemoryStore(), handler, registry=registry)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run_until(stop))

    async def lag_is_zero() -> bool:
        return registry.get_sample_value("mdm_broker_consumer_lag_records", {"group": group}) == 0

    try:
        await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=60)
        await wait_for(lag_is_zero, 30, "lag gauge to drain to 0")
    finally:
        stop.set()
        await task
    handled = sorted(n for numbers in order.values() for n in numbers)
    assert handled == list(range(EVENTS))
    for key, numbers in order.items():
        assert numbers == sorted(numbers), key
