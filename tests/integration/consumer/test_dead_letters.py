"""Failing handlers and poison records: dead-lettered after N attempts, never looping, never
silently dropped, and the rest of the partition goes on in order (real Kafka)."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from broker.consumer import (
    IdempotentConsumer,
    InMemoryStore,
    ProcessingOutcome,
    RejectEvent,
    SQLiteStore,
)
from broker.consumer.records import ConsumedRecord
from broker.events import CanonicalEvent, encode_event
from tests.integration.consumer.helpers import (
    consumer_settings,
    create_topics,
    produce,
    read_topic,
    records_of,
    sample_event,
    wait_all_committed,
    wait_for,
)

pytestmark = pytest.mark.kafka

EVENTS = 60


def _headers(record: object) -> dict[str, bytes]:
    return dict(record.headers)  # type: ignore[attr-defined]


async def test_always_failing_event_goes_to_dlq_after_n_attempts_and_partition_goes_on(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 2, f"{topic}.dlq": 1})
    # all events on ONE key, so the poison event has many successors in its partition
    events = [sample_event(n, devices=1) for n in range(EVENTS)]
    poison = events[17]
    await produce(kafka_bootstrap, topic, records_of(events))
    calls: collections.Counter[str] = collections.Counter()
    handled: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        calls[event.id] += 1
        if event.id == poison.id:
            raise RuntimeError("downstream refuses this one")
        handled.append(event.id)

    registry = CollectorRegistry()
    settings = consumer_settings(kafka_bootstrap, topic, group, max_attempts=4)
    stop = asyncio.Event()
    consumer = IdempotentConsumer(settings, InMemoryStore(), handler, registry=registry)
    task = asyncio.create_task(consumer.run_until(stop))
    try:
        await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=60)
    finally:
        stop.set()
        await task

    assert calls[poison.id] == 4
    assert handled == [e.id for e in events if e.id != poison.id]  # the rest, in order
    (dead,) = await read_topic(kafka_bootstrap, f"{topic}.dlq", expected=1)
    assert dead.value == encode_event(poison)  # unchanged, can be re-published as is
    assert dead.key == poison.partitionkey.encode()
    headers = _headers(dead)
    assert headers["dlq-reason"] == b"handler_failed"
    assert headers["dlq-attempts"] == b"4"
    assert b"downstream refuses this one" in headers["dlq-detail"]
    assert headers["dlq-source-topic"] == topic.encode()
    assert headers["content-type"] == b"application/cloudevents+json"  # original headers kept
    labels = {"group": group}
    assert registry.get_sample_value("mdm_broker_consumer_handler_errors_total", labels) == 4
    assert (
        registry.get_sample_value(
            "mdm_broker_consumer_dead_lettered_total", {**labels, "reason": "handler_failed"}
        )
        == 1
    )
    assert registry.get_sample_value("mdm_broker_consumer_processed_total", labels) == EVENTS - 1


async def test_undecodable_and_rejected_records_are_dead_lettered_with_reason(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 1, f"{topic}.dlq": 1})
    good = [sample_event(n) for n in range(5)]
    rejected = sample_event(99)
    await produce(
        kafka_bootstrap,
        topic,
        [
            *records_of(good[:2]),
            (b"k", b"this is not JSON"),
            (b"k", b'{"specversion": "1.0", "id": "x"}'),  # JSON, but not a canonical event
            *records_of([rejected]),
            *records_of(good[2:]),
        ],
    )
    outcomes: list[tuple[ProcessingOutcome, int]] = []
    handled: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        if event.id == rejected.id:
            raise RejectEvent("tenant unknown here")
        handled.append(event.id)

    def observe(outcome: ProcessingOutcome, record: ConsumedRecord) -> None:
        outcomes.append((outcome, record.offset))

    stop = asyncio.Event()
    consumer = IdempotentConsumer(
        consumer_settings(kafka_bootstrap, topic, group),
        InMemoryStore(),
        handler,
        observer=observe,
    )
    task = asyncio.create_task(consumer.run_until(stop))
    try:
        await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=60)
    finally:
        stop.set()
        await task

    assert handled == [e.id for e in good]
    dead = await read_topic(kafka_bootstrap, f"{topic}.dlq", expected=3)
    assert [_headers(d)["dlq-reason"] for d in dead] == [
        b"undecodable",
        b"undecodable",
        b"rejected",
    ]
    assert [d.value for d in dead[:2]] == [
        b"this is not JSON",
        b'{"specversion": "1.0", "id": "x"}',
    ]
    assert _headers(dead[2])["dlq-detail"] == b"tenant unknown here"
    assert [o for o, _ in outcomes] == [
        ProcessingOutcome.PROCESSED,
        ProcessingOutcome.PROCESSED,
        ProcessingOutcome.DEAD_LETTERED,
        ProcessingOutcome.DEAD_LETTERED,
        ProcessingOutcome.DEAD_LETTERED,
        ProcessingOutcome.PROCESSED,
        ProcessingOutcome.PROCESSED,
        ProcessingOutcome.PROCESSED,
    ]
    assert [off for _, off in outcomes] == list(range(8))


async def test_attempt_count_survives_a_consumer_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two failures in a first consumer, which is then stopped mid-backoff; a second consumer on
    the same SQLite store dead-letters after ONE more failure (3 in total), not 3 more."""
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 1, f"{topic}.dlq": 1})
    poison = sample_event(1)
    await produce(kafka_bootstrap, topic, records_of([poison, sample_event(2)]))
    calls = 0
    two_failures = asyncio.Event()

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal calls
        if event.id == poison.id:
            calls += 1
            if calls == 2:
                two_failures.set()
            raise RuntimeError("still failing")

    db = tmp_path / "dedupe.db"
    # the backoff after the 2nd failure (1-2 s) outlasts revoke_timeout_s: stop abandons it
    slow_retries = consumer_settings(
        kafka_bootstrap,
        topic,
        group,
        max_attempts=3,
        retry_backoff_initial_s=1.0,
        retry_backoff_max_s=60.0,
        revoke_timeout_s=0.2,
    )
    first = IdempotentConsumer(slow_retries, SQLiteStore(db), handler)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run_until(stop))
    try:
        await wait_for(lambda: _is_set(two_failures), 90, "two failed attempts")
    finally:
        stop.set()
        await task  # abandons the record during its backoff: not committed, not dead-lettered
    assert calls == 2

    second = IdempotentConsumer(
        consumer_settings(kafka_bootstrap, topic, group, max_attempts=3), SQLiteStore(db), handler
    )
    stop = asyncio.Event()
    task = asyncio.create_task(second.run_until(stop))
    try:
        await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=60)
    finally:
        stop.set()
        await task
    assert calls == 3
    (dead,) = await read_topic(kafka_bootstrap, f"{topic}.dlq", expected=1)
    assert _headers(dead)["dlq-attempts"] == b"3"


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()
