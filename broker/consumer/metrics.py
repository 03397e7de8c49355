"""Prometheus metrics of the idempotent consumer (prefix ``mdm_broker_consumer_``).

Declared once per registry: every consumer using the same registry shares the collectors and is
told apart by the ``group`` label (its consumer group, a configuration value). Label values come
from fixed sets: ``group`` from settings, ``reason`` from :class:`DeadLetterReason`.
"""

from __future__ import annotations

import bisect
import math
import threading
import weakref
from collections.abc import Iterator
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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
        self.handler_duration = DurationHistogram(
            "mdm_broker_consumer_handler_duration_seconds",
            "Time of one successful handler call including the store's record of it.",
            _BUCKETS,
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


class DurationHistogram(Collector):
    """A histogram labelled by ``group``, observed once per handled event.

    Exposed like a ``prometheus_client.Histogram`` (``_bucket{le}``, ``_count``, ``_sum``; no
    ``_created`` series). The difference is the cost of :meth:`DurationChild.observe`: one lock
    and a binary search (~0.35 us) where ``Histogram.observe`` takes two locked increments and
    a scan of the buckets (~0.8 us, ~4 % of the consumer's CPU per event).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*sorted(buckets), math.inf)
        self._children: dict[str, DurationChild] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, group: str) -> DurationChild:
        """The child of ``group`` (created on first use)."""
        with self._lock:
            child = self._children.get(group)
            if child is None:
                child = self._children[group] = DurationChild(self._bounds)
            return child

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=["group"])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=["group"])
        with self._lock:
            children = list(self._children.items())
        for group, child in children:
            counts, total = child.snapshot()
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
            family.add_metric([group], buckets, total)
        yield family


class DurationChild:
    """One ``group``'s buckets: thread-safe, one lock per observation."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self._bounds, seconds)  # the first bound >= seconds: le semantics
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """Per-bucket (not cumulative) counts and the sum, read together."""
        with self._lock:
            return list(self._counts), self._sum
