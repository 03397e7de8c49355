"""A second consumer joins the group and leaves it mid-run: no effect lost, none doubled.

Each consumer has its OWN in-memory store, so a record handled by one consumer and then handed to
the other (because an offset was not committed before the partition moved) would show up as a
double effect: this tests the commit-on-revoke protocol itself, not the dedupe store.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import pytest

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

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 1500


async def test_consumer_joining_and_leaving_mid_run_loses_and_doubles_nothing(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 6, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, records_of([sample_event(n) for n in range(EVENTS)]))
    effects: collections.Counter[str] = collections.Counter()
    by_consumer: collections.Counter[str] = collections.Counter()
    order: dict[str, list[int]] = collections.defaultdict(list)

    def handler_for(name: str) -> Callable[[CanonicalEvent, None], Awaitable[None]]:
        async def handler(event: CanonicalEvent, tx: None) -> None:
            await asyncio.sleep(0.025)  # slow enough for the run to span both rebalances
            effects[event.id] += 1
            by_consumer[name] += 1
            order[event.partitionkey].append(int(event.id[1:]))

        return handler

    settings = consumer_settings(kafka_bootstrap, topic, group)
    a = IdempotentConsumer(settings, InMemoryStore(), handler_for("a"))
    b = IdempotentConsumer(settings, InMemoryStore(), handler_for("b"))
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run_until(stop_a))
    try:
        await wait_for(_count_at_least(effects, EVENTS // 5), 60, "consumer a to make progress")
        task_b = asyncio.create_task(b.run_until(stop_b))
        try:
            await wait_for(_at_least(by_consumer, "b", 60), 60, "consumer b to take partitions")
        finally:
            stop_b.set()
            await task_b  # leaves the group mid-run
        assert sum(effects.values()) < EVENTS, "the run ended before b left; make it longer"
        await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=90)
    finally:
        stop_a.set()
        await task_a

    assert by_consumer["a"] > 0
    assert by_consumer["b"] >= 60
    assert set(effects) == {f"e{n}" for n in range(EVENTS)}
    assert set(effects.values()) == {1}
    for key, numbers in order.items():  # one entity's events stayed in publication order
        assert numbers == sorted(numbers), key


def _count_at_least(counter: collections.Counter[str], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(counter.values()) >= n

    return check


def _at_least(counter: collections.Counter[str], key: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return counter[key] >= n

    return check
