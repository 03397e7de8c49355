"""Helpers for tests that read back what the broker wrote to a real Kafka."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from broker.settings import KafkaSettings


async def read_records(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    group_id: str | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning until ``expected`` records arrived or ``timeout_s``.

    Returns whatever was read (the caller asserts on the count), so a shortfall shows as a clear
    assertion instead of a hang.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id or f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def outage_kafka_settings(
    bootstrap_servers: str, prefix: str, publish_timeout_s: float = 2.0
) -> KafkaSettings:
    """Settings for the Kafka-outage tests: ``{prefix}.events|dlq|state`` topics of 3 partitions,
    short publish/request timeouts and a fast health probe, so an outage shows within seconds."""
    return KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        events_topic=f"{prefix}.events",
        dlq_topic=f"{prefix}.dlq",
        state_topic=f"{prefix}.state",
        partitions=3,
        publish_timeout_s=publish_timeout_s,
        request_timeout_s=3.0,
        health_probe_interval_s=0.3,
    )
