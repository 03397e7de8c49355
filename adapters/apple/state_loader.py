"""Read the live entries of the compacted state topic (a stand-in for ``broker.state.load_state``).

``broker.state.load_state`` currently fails on aiokafka 0.14 in two ways: it reads
``partitions_for_topic`` from the consumer's metadata cache, which never holds an unsubscribed
topic (so it always sees no partitions and returns nothing), and stopping a consumer whose internal
reset task never ran raises ``CancelledError``. Partitions are taken from the admin client here.
This module does the same read without either problem; it can go once the core function is fixed.
Same contract: newest record per key wins, a tombstone deletes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from broker.errors import PublishError

if TYPE_CHECKING:
    from broker.config import KafkaSettings


async def _partitions(settings: KafkaSettings) -> list[int]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.client_id}-apple-state"
    )
    await admin.start()
    try:
        described = await admin.describe_topics([settings.state_topic])
    finally:
        await admin.close()
    if not described or described[0].get("error_code"):
        return []  # the topic does not exist (yet): no state
    return sorted(int(p["partition"]) for p in described[0].get("partitions", []))


async def load_entries(settings: KafkaSettings, prefix: str, timeout_s: float) -> dict[str, Any]:
    """Live state entries whose key starts with ``prefix``; raises PublishError after ``timeout_s``."""
    topic = settings.state_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-apple-state",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    state: dict[str, Any] = {}
    started = False
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            started = True
            await asyncio.sleep(0)  # let the consumer's internal tasks begin before any stop()
            chosen = [TopicPartition(topic, p) for p in await _partitions(settings)]
            if not chosen:
                return state
            consumer.assign(chosen)
            await consumer.seek_to_beginning(*chosen)
            end = await consumer.end_offsets(chosen)
            remaining = {tp for tp in chosen if end[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        key = record.key.decode() if record.key else ""
                        if not key.startswith(prefix):
                            continue
                        if record.value is None:
                            state.pop(key, None)
                        else:
                            state[key] = orjson.loads(record.value)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    except TimeoutError as exc:
        raise PublishError(f"could not read state topic {topic} within {timeout_s}s") from exc
    finally:
        if started:
            await consumer.stop()
    return state
