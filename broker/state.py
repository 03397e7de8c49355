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
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from broker.errors import PublishError
from broker.kafka_diagnosis import access_error, start_client
from broker.kafka_security import client_kwargs

if TYPE_CHECKING:
    from broker.settings import KafkaSettings
    from broker.sink import StateSink


async def state_partitions(settings: KafkaSettings) -> list[int]:
    """Partition numbers of the state topic (empty when it does not exist yet)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-state-admin",
        request_timeout_ms=int(settings.request_timeout_s * 1000),
        **client_kwargs(settings.security),
    )
    await admin.start()
    try:
        # list first: describing a missing topic could auto-create it with broker defaults
        # (1 partition, not compacted) on clusters with auto.create.topics.enable=true.
        if settings.state_topic not in await admin.list_topics():
            return []
        described = await admin.describe_topics([settings.state_topic])
    finally:
        await admin.close()
    if not described or described[0].get("error_code"):
        return []
    return sorted(int(p["partition"]) for p in described[0].get("partitions", []))


async def load_state(
    settings: KafkaSettings,
    prefix: str = "",
    partitions: Collection[int] | None = None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Read the state topic from the beginning to its current end and return the live entries.

    Only keys starting with ``prefix`` are returned; ``partitions`` restricts the read to those
    partitions (default: all). The newest record of a key wins; a tombstone removes the key.
    Raises :class:`PublishError` when Kafka cannot be read within ``timeout_s``, and its
    :class:`~broker.errors.KafkaAccessError` when Kafka refuses the read (no READ ACL,
    credentials, TLS), naming the cause and what to fix.
    """
    topic = settings.state_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-state-loader",
        enable_auto_commit=False,
        isolation_level="read_committed",
        **client_kwargs(settings.security),
    )
    state: dict[str, Any] = {}
    started = False
    try:
        async with asyncio.timeout(timeout_s):
            started = True  # stopped even when the start fails: else it is left unclosed
            # credentials / TLS refused: KafkaAccessError
            await start_client(consumer, settings.security.ssl_cert_file)
            await asyncio.sleep(0)  # let the consumer's internal tasks start before any stop()
            chosen = [
                TopicPartition(topic, p)
                for p in await state_partitions(settings)
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
    except KafkaError as exc:
        refused = access_error(exc)
        if refused is None:
            raise
        raise refused from exc
    finally:
        if started:
            await consumer.stop()
    return state


class StateWriter:
    """Writes state entries through the shared publisher; each call waits for the Kafka ack."""

    def __init__(self, publisher: StateSink) -> None:
        self._publisher = publisher

    async def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``; raises PublishError on failure."""
        await self._publisher.send_raw(
            self._publisher.settings.state_topic, key.encode(), orjson.dumps(value)
        )

    async def delete(self, key: str) -> None:
        """Write a tombstone: ``key`` disappears from the state after compaction and from loads."""
        await self._publisher.send_raw(self._publisher.settings.state_topic, key.encode(), None)
