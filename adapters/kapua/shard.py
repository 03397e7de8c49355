"""Sharding of the Kapua work through Kafka consumer-group assignment of the state topic.

Each broker instance joins the group ``kapua.group_id`` on the state topic. The partitions assigned
to it are the keys it owns. On assignment it reads those partitions from the beginning to their
end offset at assignment time (merging records with :func:`adapters.kapua.cursors.merge`) and only
then hands the loaded operations to its owner; afterwards every new record of an owned partition is
passed on live (registrations written by other instances reach their owner this way). On
revocation the owner is told first and must stop polling those operations and checkpoint before the
callback returns: Kafka runs every member's revocation before any member's assignment, so an
operation is never polled by two instances in the same generation.

Offsets are never committed: the state is rebuilt from the compacted topic on every assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from adapters.kapua.cursors import PREFIX, OpRecord, OpSlots, merge, resolve_all
from adapters.kapua.metrics import KapuaMetrics
from adapters.kapua.settings import KapuaSettings
from broker.kafka_security import client_kwargs
from broker.settings import KafkaSettings

log = logging.getLogger(__name__)


class ShardOwner(Protocol):
    """What the shard consumer drives (implemented by the poll scheduler)."""

    async def on_loaded(self, partition: int, records: dict[str, OpRecord]) -> None: ...

    async def on_revoked(self, partitions: set[int]) -> None: ...

    async def on_record(self, partition: int, key: str, value: Any) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        revoked: Callable[[set[TopicPartition]], Awaitable[None]],
        assigned: Callable[[set[TopicPartition]], Awaitable[None]],
    ) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._assigned(assigned)


class ShardConsumer:
    """Group membership on the state topic; see the module docstring for the guarantees."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: KapuaSettings,
        owner: ShardOwner,
        metrics: KapuaMetrics,
        client_id: str,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._owner = owner
        self._metrics = metrics
        self._client_id = client_id
        self._consumer: Any = None
        self._loading: dict[int, int] = {}  # partition -> end offset to reach
        self._pending: dict[int, dict[str, OpSlots]] = {}
        self.assigned: set[int] = set()
        self.loaded: set[int] = set()
        self.partition_count = 0

    async def start(self) -> None:
        s = self._settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            client_id=self._client_id,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            metadata_max_age_ms=30_000,
            **client_kwargs(self._kafka.security),
        )
        await self._consumer.start()
        self._consumer.subscribe(
            [self._kafka.state_topic], listener=_Listener(self._on_revoked, self._on_assigned)
        )

    async def stop(self) -> None:
        """Leave the group (the owner must have stopped polling before). Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
        self.assigned.clear()
        self.loaded.clear()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        if not partitions:
            return
        self._metrics.rebalances.labels("revoked").inc(len(partitions))
        log.info("kapua: state partitions revoked %s", sorted(partitions))
        self.assigned -= partitions
        self.loaded -= partitions
        for p in partitions:
            self._loading.pop(p, None)
            self._pending.pop(p, None)
        await self._owner.on_revoked(partitions)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        topic = self._kafka.state_topic
        self.partition_count = len(self._consumer.partitions_for_topic(topic) or ())
        mine = sorted(tp for tp in assigned if tp.topic == topic)
        if not mine:
            return
        self._metrics.rebalances.labels("assigned").inc(len(mine))
        log.info("kapua: state partitions assigned %s", [tp.partition for tp in mine])
        end = await self._consumer.end_offsets(mine)
        await self._consumer.seek_to_beginning(*mine)
        for tp in mine:
            self.assigned.add(tp.partition)
            self._pending[tp.partition] = {}
            self._loading[tp.partition] = end[tp]

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; loading and live records as the module describes."""
        topic = self._kafka.state_topic
        while not stop.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            except KafkaError as exc:
                log.warning("kapua: state topic read failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                p = tp.partition
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if not key.startswith(PREFIX):
                        continue
                    try:
                        value = None if record.value is None else orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        log.warning("kapua: unreadable state record %s ignored", key)
                        continue
                    if p in self._loading:
                        merge(self._pending[p], key, value)
                    elif p in self.loaded:
                        await self._owner.on_record(p, key, value)
            for p, target in list(self._loading.items()):
                position = await self._consumer.position(TopicPartition(topic, p))
                if position >= target:
                    del self._loading[p]
                    records = resolve_all(self._pending.pop(p, {}))
                    self.loaded.add(p)
                    log.info("kapua: partition %d loaded (%d operation keys)", p, len(records))
                    await self._owner.on_loaded(p, records)
