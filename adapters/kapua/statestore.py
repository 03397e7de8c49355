"""Writes the Kapua adapter's state records (see :mod:`adapters.kapua.cursors` for the layout).

Guarantees:

* every call returns only after Kafka acked the record(s), else raises
  :class:`~broker.errors.PublishError`; each failed write is logged and counted in
  ``mdm_broker_kapua_state_write_failures_total{kind}`` before it is raised, and the caller
  retries (the poller re-writes a cursor it could not store at its next poll, discovery and watch
  requests register again, housekeeping tombstones again next round);
* a record of one operation always lands in that operation's partition, whatever its kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from adapters.kapua.cursors import KINDS, record_key
from adapters.kapua.metrics import KapuaMetrics
from broker.errors import PublishError
from broker.settings import KafkaSettings
from broker.state import StateWriter, state_partitions

log = logging.getLogger(__name__)


class StateStore:
    """Kind-aware writer of Kapua state records."""

    def __init__(
        self,
        writer: StateWriter,
        metrics: KapuaMetrics,
        kafka: KafkaSettings,
        partitions: Callable[[], int],
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._kafka = kafka
        self._partitions = partitions
        self._looked_up = 0

    async def partition_count(self) -> int:
        """The state topic's partition count: from the group assignment, else asked once."""
        count = self._partitions() or self._looked_up
        if count:
            return count
        try:
            self._looked_up = len(await state_partitions(self._kafka))
        except Exception as exc:  # admin client failures of any kind: the write fails, retried
            raise PublishError(f"cannot read the state topic's partitions: {exc!r}") from exc
        if not self._looked_up:
            raise PublishError(f"state topic {self._kafka.state_topic} does not exist")
        return self._looked_up

    async def put(self, operation_key: str, kind: str, value: dict[str, Any]) -> None:
        """Store ``value`` as the ``kind`` record of the operation (acked)."""
        try:
            key = record_key(operation_key, kind, await self.partition_count())
            await self._writer.put(key, value)
        except PublishError as exc:
            self._failed(kind, operation_key, exc)
            raise

    async def delete(self, operation_key: str, kinds: tuple[str, ...] = KINDS) -> None:
        """Tombstone the given kinds of the operation (acked)."""
        for kind in kinds:
            try:
                key = record_key(operation_key, kind, await self.partition_count())
                await self._writer.delete(key)
            except PublishError as exc:
                self._failed(f"{kind}_tombstone", operation_key, exc)
                raise

    def _failed(self, kind: str, operation_key: str, exc: PublishError) -> None:
        self._metrics.state_write_failures.labels(kind).inc()
        log.warning("kapua: %s state write for %s failed (%s); retried", kind, operation_key, exc)
