"""Helpers shared by the consumer's Kafka tests: events, topics, producing, reading, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from broker.consumer import ConsumerSettings
from broker.events import (
    KAFKA_HEADERS,
    CanonicalEvent,
    EventType,
    RawOnlyData,
    Vendor,
    encode_event,
    make_event,
)


def sample_event(
    n: int,
    *,
    vendor: Vendor = Vendor.KAPUA,
    tenant: str = "scope-1",
    type: EventType = EventType.TEST,
    devices: int = 40,
) -> CanonicalEvent:
    """Event number ``n``: id ``e{n}``, keyed to one of ``devices`` devices."""
    return make_event(
        id=f"e{n}",
        vendor=vendor,
        tenant=tenant,
        type=type,
        vendortype="TEST",
        partitionkey=f"{vendor.value}:{tenant}:dev{n % devices}",
        data=RawOnlyData(raw={"n": n}),
    )


def consumer_settings(bootstrap: str, topic: str, group: str, **overrides: Any) -> ConsumerSettings:
    """Settings with short bounds suited to tests."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "group_id": group,
        "dlq_topic": f"{topic}.dlq",
        "max_attempts": 3,
        "retry_backoff_initial_s": 0.01,
        "retry_backoff_max_s": 0.05,
        "commit_interval_s": 0.2,
        "poll_timeout_s": 0.1,
        "session_timeout_s": 10.0,
        "heartbeat_interval_s": 1.0,
        "revoke_timeout_s": 5.0,
    }
    values.update(overrides)
    return ConsumerSettings(**values)


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Write ``(key, value)`` records in this order and wait for every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, headers=KAFKA_HEADERS)
            for key, value in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def records_of(events: Sequence[CanonicalEvent]) -> list[tuple[bytes | None, bytes]]:
    return [(e.partitionkey.encode(), encode_event(e)) for e in events]


async def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of ``topic`` from the beginning, waiting (bounded) until ``expected`` exist."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = sorted(p["partition"] for p in described["partitions"])
    if not parts:
        raise AssertionError(f"topic {topic} has no partitions")
    return parts


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    parts = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    """Wait (bounded) until ``condition`` holds; fail the test with ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(interval_s)


async def wait_all_committed(bootstrap: str, group: str, topic: str, timeout_s: float) -> None:
    """Wait until the group's committed offsets reach the end of every partition of ``topic``."""
    ends = await end_offsets(bootstrap, topic)

    async def done() -> bool:
        committed = await committed_offsets(bootstrap, group, topic)
        return all(committed.get(p, 0) >= end for p, end in ends.items())

    await wait_for(done, timeout_s, f"group {group} to commit to the end of {topic}: {ends}")
