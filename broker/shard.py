"""Work sharded across broker instances by consumer-group assignment of the state topic.

Each instance joins ``group_id`` on the state topic; the partitions Kafka assigns to it are the
state keys (and so the work named by them) it owns. No coordination code of our own: Kafka's group
protocol decides, and a dead member's partitions move to the survivors after its session timeout.

On assignment the consumer reads each new partition from the beginning to its end offset at
assignment time (newest value of a key wins, a tombstone removes it; only keys starting with
``prefix``) and only then calls ``owner.on_loaded(partition, entries)``; afterwards every new record
of an owned partition goes to ``owner.on_record``. On revocation ``owner.on_revoked`` runs first and
must stop that partition's work before it returns: Kafka completes every member's revocation before
any member's assignment, so a key's work never runs on two live instances in the same generation.

Offsets are never committed: the state is rebuilt from the compacted topic on every assignment.

A first connection Kafka refuses for good (credentials, TLS) ends :meth:`StateShard.start`, and a
read it refuses for good (no READ ACL on the state topic or the group) ends :meth:`StateShard.run`,
with :class:`broker.errors.KafkaAccessError`, whose one-line message names the cause and the ACL
or setting to fix, counted in ``mdm_broker_kafka_connect_errors_total{cause}``: the supervisor
logs it, restarts the member with backoff and /readyz names it (``task:<name>``). Other read errors
are transient: logged and retried.
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

from broker.errors import KafkaAccessError
from broker.kafka_diagnosis import (
    capture_aiokafka_errors,
    read_refusal,
    start_client,
    stop_client,
)
from broker.kafka_security import client_kwargs
from broker.metrics import BrokerMetrics
from broker.settings import KafkaSettings

log = logging.getLogger(__name__)

_ASSIGNMENT_WAIT_S = 2.0
"""How long one fetch may wait for a group (re)assignment before the member looks at what
aiokafka logged meanwhile (e.g. reconnects refused their credentials: it retries them forever)."""


class ShardOwner(Protocol):
    """What a :class:`StateShard` drives."""

    async def on_loaded(self, partition: int, entries: dict[str, Any]) -> None: ...

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


class StateShard:
    """Group membership on the state topic; see the module docstring for the guarantees."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        prefix: str,
        owner: ShardOwner,
        client_id: str,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 2.0,
        on_rebalance: Callable[[str, int], None] | None = None,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self._kafka = kafka
        self._metrics = metrics
        self._group_id = group_id
        self._prefix = prefix
        self._owner = owner
        self._client_id = client_id
        self._session_timeout_s = session_timeout_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._on_rebalance = on_rebalance
        self._consumer: Any = None
        self._loading: dict[int, int] = {}  # partition -> end offset to reach
        self._pending: dict[int, dict[str, Any]] = {}
        self.assigned: set[int] = set()
        self.loaded: set[int] = set()
        self.partition_count = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            **client_kwargs(self._kafka.security),
            client_id=self._client_id,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self._session_timeout_s * 1000),
            heartbeat_interval_ms=int(self._heartbeat_interval_s * 1000),
            metadata_max_age_ms=30_000,
        )
        try:
            # a wrong password or TLS setup surfaces here
            await start_client(self._consumer, self._kafka.security.ssl_cert_file)
        except KafkaAccessError as exc:
            self._count_refusal(exc)
            raise
        self._consumer.subscribe(
            [self._kafka.state_topic], listener=_Listener(self._on_revoked, self._on_assigned)
        )

    async def stop(self) -> None:
        """Leave the group (the owner must have stopped its work before). Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await stop_client(consumer)
        self.assigned.clear()
        self.loaded.clear()

    def _count_refusal(self, refused: KafkaAccessError) -> None:
        if self._metrics is not None:
            self._metrics.kafka_connect_errors.labels(refused.cause).inc()

    def _count(self, what: str, n: int) -> None:
        if self._on_rebalance is not None:
            self._on_rebalance(what, n)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        if not partitions:
            return
        self._count("revoked", len(partitions))
        log.info("%s: state partitions revoked %s", self._group_id, sorted(partitions))
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
        self._count("assigned", len(mine))
        log.info("%s: state partitions assigned %s", self._group_id, [tp.partition for tp in mine])
        end = await self._consumer.end_offsets(mine)
        await self._consumer.seek_to_beginning(*mine)
        for tp in mine:
            self.assigned.add(tp.partition)
            self._pending[tp.partition] = {}
            self._loading[tp.partition] = end[tp]

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; loading and live records as the module describes."""
        with capture_aiokafka_errors() as lines:
            while not stop.is_set():
                await self._consume(await self._next_batch(stop, lines))

    async def _next_batch(self, stop: asyncio.Event, lines: list[str]) -> dict[Any, Any]:
        """One fetch. Raises KafkaAccessError (counted) when Kafka refuses for good: an error
        raised by the fetch, or one aiokafka only logs (a reconnect refused its credentials or
        its client certificate, expired since start-up)."""
        fetch = self._consumer.getmany(timeout_ms=200, max_records=5000)
        try:
            batch: dict[Any, Any] = await asyncio.wait_for(fetch, _ASSIGNMENT_WAIT_S)
        except TimeoutError:  # aiokafka waits for a (re)assignment without bound
            batch = {}
        except KafkaError as exc:
            if (refused := self._refused(exc, lines)) is not None:  # an operator must act
                raise refused from exc
            log.warning("%s: state topic read failed: %s", self._group_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            return {}
        if lines and (refused := self._refused(None, lines)) is not None:
            raise refused
        return batch

    def _refused(self, exc: KafkaError | None, lines: list[str]) -> KafkaAccessError | None:
        """See :func:`broker.kafka_diagnosis.read_refusal` (with the client certificate)."""
        return read_refusal(exc, lines, self._kafka.security.ssl_cert_file, self._metrics)

    async def _consume(self, batch: dict[Any, Any]) -> None:
        """Records of owned partitions; partitions whose load reached its end are handed over."""
        topic = self._kafka.state_topic
        for tp, records in batch.items():
            p = tp.partition
            for record in records:
                key = record.key.decode(errors="replace") if record.key else ""
                if not key.startswith(self._prefix):
                    continue
                try:
                    value = None if record.value is None else orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    log.warning("%s: unreadable state record %s ignored", self._group_id, key)
                    continue
                if p in self._loading:
                    if value is None:
                        self._pending[p].pop(key, None)
                    else:
                        self._pending[p][key] = value
                elif p in self.loaded:
                    await self._owner.on_record(p, key, value)
        for p, target in list(self._loading.items()):
            position = await self._consumer.position(TopicPartition(topic, p))
            if position >= target:
                del self._loading[p]
                entries = self._pending.pop(p, {})
                self.loaded.add(p)
                log.info("%s: partition %d loaded (%d keys)", self._group_id, p, len(entries))
                await self._owner.on_loaded(p, entries)
