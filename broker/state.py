"""Durable broker state (cursors, tracked work) in a compacted Kafka topic.

Each entry is a record keyed by a string (e.g. ``kapua/cursor/{scope}/{operation}``) whose value
is JSON; the newest record of a key wins and a tombstone (``None``) deletes it. Compaction keeps the
topic small. Writes go through the shared publisher, so a ``put`` returns only once Kafka acked it.

Sharding across instances: a key always lands in the same partition (Kafka's default murmur2
partitioner), so an adapter that joins a consumer group on this topic owns exactly the keys of the
partitions assigned to it (see :func:`load_state` with ``partitions``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from broker.errors import PublishError
from broker.publisher import KafkaPublisher

if TYPE_CHECKING:
    from broker.config import KafkaSettings


async def load_state(
    settings: KafkaSettings,
    prefix: str = "",
    partitions: Collection[int] | None = None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Read the state topic from the beginning to its current end and return the live entries.

    Only keys starting with ``prefix`` are returned; ``partitions`` restricts the read to those
    partitions (default: all). Raises :class:`PublishError` when Kafka cannot be read in time.
    """
    topic = settings.state_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-state-loader",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            available = consumer.partitions_for_topic(topic) or set()
            chosen = [
                TopicPartition(topic, p)
                for p in sorted(available)
                if partitions is None or p in partitions
            ]
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
                        if key.startswith(prefix):
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
        await consumer.stop()
    return state


class StateWriter:
    """Writes state entries through the shared publisher; each call waits for the Kafka ack."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher

    async def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``; raises PublishError on failure."""
        await self._publisher.send_raw(
            self._publisher.settings.state_topic, key.encode(), orjson.dumps(value)
        )

    async def delete(self, key: str) -> None:
        """Write a tombstone: ``key`` disappears from the state after compaction and from loads."""
        await self._publisher.send_raw(self._publisher.settings.state_topic, key.encode(), None)
