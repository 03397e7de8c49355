"""Writes Kafka refused for lack of an ACL: keep the broker not-ready until the ACL is there.

A missing WRITE ACL is not a transient failure: every retry fails the same way, yet the cluster
answers metadata requests, so the publisher's metadata probe alone would report Kafka healthy and
vendors would be invited to send work that cannot be stored. :class:`WriteRefusals` remembers the
refused topics and keeps Kafka health failed (reason naming the cause and the fix, one ERROR log
line per refusal episode, ``mdm_broker_kafka_connect_errors_total{cause}``) until either a write
to each refused topic succeeds or :func:`broker.kafka_access.write_access` says WRITE is allowed
again (checked by the publisher's health probe, without writing a record).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import errors as kafka_errors

from broker.health import KafkaHealth
from broker.kafka_access import Access, write_access
from broker.kafka_diagnosis import ConnectCause, Diagnosis, diagnose
from broker.metrics import BrokerMetrics

log = logging.getLogger(__name__)

_REFUSALS = (ConnectCause.TOPIC_AUTHORIZATION, ConnectCause.CLUSTER_AUTHORIZATION)


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` means "this principal may not write there" (an ACL is missing)."""
    return isinstance(
        exc,
        kafka_errors.TopicAuthorizationFailedError | kafka_errors.ClusterAuthorizationFailedError,
    )


class WriteRefusals:
    """The topics this principal was refused WRITE on, until access is restored."""

    def __init__(self, health: KafkaHealth, metrics: BrokerMetrics) -> None:
        self._health = health
        self._metrics = metrics
        self._topics: set[str] = set()
        self._diagnosis: Diagnosis | None = None

    @property
    def active(self) -> bool:
        return bool(self._topics)

    @property
    def reason(self) -> str:
        d = self._diagnosis
        return f"{d.cause.value}: {d.summary}" if d is not None else ""

    def note(self, exc: BaseException, topics: Iterable[str]) -> bool:
        """Record ``exc`` if it is an authorization refusal of a write to ``topics``."""
        diagnosis = diagnose(exc)
        if diagnosis.cause not in _REFUSALS:
            return False
        if not self._topics:
            log.error("kafka refused a write (%s): %s", diagnosis.cause.value, diagnosis.summary)
        self._topics.update(topics)
        self._diagnosis = diagnosis
        self._metrics.kafka_connect_errors.labels(diagnosis.cause.value).inc()
        self._fail()
        return True

    def wrote(self, topics: Iterable[str]) -> None:
        """A write to ``topics`` was acked: they are writable again."""
        if self._topics:
            self._topics.difference_update(topics)
            if not self._topics:
                log.info("kafka write access restored")

    async def recheck(self, client: Any) -> bool:
        """Ask Kafka (no record written) whether the refused topics are writable now; True when
        none is refused any more. Keeps health failed otherwise."""
        for topic in sorted(self._topics):
            if await write_access(client, topic) is Access.ALLOWED:
                self.wrote([topic])
        if self._topics:
            self._fail()
            return False
        return True

    def _fail(self) -> None:
        self._health.mark_failed(self.reason)
        self._metrics.kafka_healthy.set(0)
