"""Every event duplicated 3 times at random positions: the handler's effect happens once per id,
with each store, against a real Kafka (and a real PostgreSQL for PostgresStore)."""

from __future__ import annotations

import asyncio
import collections
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from broker.consumer import IdempotentConsumer, InMemoryStore, PostgresStore, SQLiteStore
from broker.events import CanonicalEvent
from tests.integration.consumer.helpers import (
    consumer_settings,
    create_topics,
    produce,
    records_of,
    sample_event,
    wait_all_committed,
)

pytestmark = pytest.mark.kafka

EVENTS = 250
COPIES = 4  # the original and 3 duplicates


def _shuffled_with_duplicates(seed: int) -> list[CanonicalEvent]:
    events = [sample_event(n) for n in range(EVENTS)]
    stream = [e for e in events for _ in range(COPIES)]
    random.Random(seed).shuffle(stream)
    return stream


async def _consume_all(
    consumer: IdempotentConsumer[Any], bootstrap: str, group: str, topic: str
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run_until(stop))
    try:
        await wait_all_committed(bootstrap, group, topic, timeout_s=60)
    finally:
        stop.set()
        await task


def _metric(registry: CollectorRegistry, name: str, group: str) -> float:
    return registry.get_sample_value(name, {"group": group}) or 0.0


def _assert_once_each(
    effects: collections.Counter[str], registry: CollectorRegistry, group: str
) -> None:
    assert set(effects) == {f"e{n}" for n in range(EVENTS)}
    assert set(effects.values()) == {1}
    assert _metric(registry, "mdm_broker_consumer_processed_total", group) == EVENTS
    skipped = _metric(registry, "mdm_broker_consumer_duplicates_skipped_total", group)
    assert skipped == EVENTS * (COPIES - 1)


async def _setup(bootstrap: str, topic_prefix: str) -> tuple[str, str]:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(bootstrap, {topic: 3, f"{topic}.dlq": 1})
    await produce(bootstrap, topic, records_of(_shuffled_with_duplicates(seed=7)))
    return topic, group


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_each_id_has_its_effect_exactly_once(
    store_kind: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic, group = await _setup(kafka_bootstrap, topic_prefix)
    registry = CollectorRegistry()
    effects: collections.Counter[str] = collections.Counter()

    async def handler(event: CanonicalEvent, tx: None) -> None:
        effects[event.id] += 1

    store = InMemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "dedupe.db")
    consumer: IdempotentConsumer[None] = IdempotentConsumer(
        consumer_settings(kafka_bootstrap, topic, group), store, handler, registry=registry
    )
    await _consume_all(consumer, kafka_bootstrap, group, topic)
    _assert_once_each(effects, registry, group)


@pytest.mark.postgres
async def test_each_id_has_its_effect_exactly_once_postgres(
    kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str
) -> None:
    topic, group = await _setup(kafka_bootstrap, topic_prefix)
    registry = CollectorRegistry()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE effects (id text NOT NULL)")  # no unique: doubles show

        async def handler(event: CanonicalEvent, tx: asyncpg.Connection) -> None:
            await tx.execute("INSERT INTO effects (id) VALUES ($1)", event.id)

        consumer = IdempotentConsumer(
            consumer_settings(kafka_bootstrap, topic, group),
            PostgresStore(postgres_dsn),
            handler,
            registry=registry,
        )
        await _consume_all(consumer, kafka_bootstrap, group, topic)
        rows = await conn.fetch("SELECT id, count(*) AS n FROM effects GROUP BY id")
    finally:
        await conn.close()
    effects = collections.Counter({row["id"]: int(row["n"]) for row in rows})
    _assert_once_each(effects, registry, group)
