"""Prometheus metrics of the idempotent consumer (prefix ``mdm_broker_consumer_``).

Declared once per registry: every consumer using the same registry shares the collectors and is
told apart by the ``group`` label (its consumer group, a configuration value). Label values come
from fixed sets: ``group`` from settings, ``reason`` from :class:`DeadLetterReason`.
"""

from __future__ import annotations

import threading
import weakref
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class DeadLetterReason(StrEnum):
    """Why a record went to the consumer's dead-letter topic (header ``dlq-reason``)."""

    HANDLER_FAILED = "handler_failed"  # the handler raised max_attempts times
    REJECTED = "rejected"  # the handler raised RejectEvent
    UNDECODABLE = "undecodable"  # the record is not a canonical event


class ConsumerMetrics:
    """The consumer's collectors. Use :meth:`for_registry` to share them between consumers."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ConsumerMetrics] = (
        weakref.WeakKeyDictionary()
    )
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.processed = Counter(
            "mdm_broker_consumer_processed_total",
            "Events whose handler succeeded and whose id was recorded.",
            ["group"],
            registry=r,
        )
        self.duplicates_skipped = Counter(
            "mdm_broker_consumer_duplicates_skipped_total",
            "Events skipped because their (source, id) was already recorded.",
            ["group"],
            registry=r,
        )
        self.handler_errors = Counter(
            "mdm_broker_consumer_handler_errors_total",
            "Handler attempts that raised (each retry counts).",
            ["group"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "mdm_broker_consumer_dead_lettered_total",
            "Records written to the consumer's dead-letter topic, by reason.",
            ["group", "reason"],
            registry=r,
        )
        self.store_errors = Counter(
            "mdm_broker_consumer_store_errors_total",
            "Dedupe-store operations that failed (the record is retried, not committed).",
            ["group"],
            registry=r,
        )
        self.lag = Gauge(
            "mdm_broker_consumer_lag_records",
            "Records between the partitions' high watermarks and the next record to process, "
            "summed over the partitions assigned to this process.",
            ["group"],
            registry=r,
        )
        self.handler_duration = Histogram(
            "mdm_broker_consumer_handler_duration_seconds",
            "Time of one successful handler call including the store's record of it.",
            ["group"],
            buckets=_BUCKETS,
            registry=r,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> ConsumerMetrics:
        """The collectors registered in ``registry``, declared there on first use."""
        with cls._lock:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls(registry)
                cls._by_registry[registry] = metrics
            return metrics
