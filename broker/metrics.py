"""Every Prometheus metric of the broker, declared once against an injected registry.

Label values come from fixed sets (vendors, canonical types, reason enums, HTTP status classes);
never raw paths, ids, tenants or tokens, so cardinality stays bounded and secrets stay out.
Prefix: ``mdm_broker_``. These are the vendor-neutral metrics; each adapter declares its own
(``adapters/<vendor>/metrics.py``) against the same registry.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_M = TypeVar("_M", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RejectReason(StrEnum):
    """Why input was refused or dead-lettered (label ``reason``)."""

    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    SCHEMA = "schema"
    TOO_DEEP = "too_deep"
    INTERNAL_ERROR = "internal_error"
    MISMATCH = "mismatch"  # e.g. a Kapua row whose operationId/scopeId is not its URL's
    # a Kapua COMPLETED/FAILED row whose operation was deleted before its record said whether the
    # row closed it or ended a phase: no label is guessed
    CLOSING_UNKNOWN = "closing_unknown"
    UNKNOWN_TENANT = "unknown_tenant"
    KAFKA_UNAVAILABLE = "kafka_unavailable"


class Children(Generic[_M]):
    """The children of one labelled metric, each resolved once per label set.

    ``children(*values)`` is ``metric.labels(*values)`` without its per-call cost (argument
    checks, a lock and a lookup), for hot paths such as one webhook request. Label values come
    from fixed sets (see the module docstring), so the cache stays as small as the metric.
    """

    def __init__(self, metric: _M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class BrokerMetrics:
    """The broker's metrics. Tests pass a fresh ``CollectorRegistry`` each."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.notifications_received = Counter(
            "mdm_broker_notifications_received_total",
            "Vendor notifications received (before dedupe), by vendor and canonical type.",
            ["vendor", "type"],
            registry=r,
        )
        self.events_published = Counter(
            "mdm_broker_events_published_total",
            "Canonical events acked by Kafka.",
            ["vendor", "type"],
            registry=r,
        )
        self.duplicates_dropped = Counter(
            "mdm_broker_duplicates_dropped_total",
            "Notifications dropped by the broker's short in-memory dedupe window.",
            ["vendor"],
            registry=r,
        )
        self.id_collisions = Counter(
            "mdm_broker_id_collisions_total",
            "Notifications whose vendor id was recently published with different content: "
            "published under a derived id `{id}~{digest}` with the `idcollision` extension.",
            ["vendor"],
            registry=r,
        )
        self.internal_errors = Counter(
            "mdm_broker_internal_errors_total",
            "Unexpected exceptions while handling authenticated input (the input is "
            "dead-lettered with reason internal_error), by vendor.",
            ["vendor"],
            registry=r,
        )
        self.rejected = Counter(
            "mdm_broker_rejected_total",
            "Input refused (HTTP 4xx/5xx to the vendor) by vendor and reason.",
            ["vendor", "reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "mdm_broker_dead_lettered_total",
            "Authenticated input written to the dead-letter topic, by vendor and reason.",
            ["vendor", "reason"],
            registry=r,
        )
        self.publish_latency = Histogram(
            "mdm_broker_publish_duration_seconds",
            "Time from a publish call to the Kafka ack of its whole batch, by vendor (or 'state' for "
            "state-topic writes, 'mixed' for multi-vendor batches) and outcome (ok, error).",
            ["vendor", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_failures = Counter(
            "mdm_broker_publish_failures_total",
            "Publish calls that raised PublishError, by error (timeout, the aiokafka error class).",
            ["error"],
            registry=r,
        )
        self.records_rejected = Counter(
            "mdm_broker_records_rejected_total",
            "Records Kafka can never take (RecordRejectedError: too large, invalid, not "
            "serializable), by vendor and reason; the input is dead-lettered.",
            ["vendor", "reason"],
            registry=r,
        )
        self.producer_recreated = Counter(
            "mdm_broker_producer_recreated_total",
            "Kafka producers replaced by a new idempotent session, by the error that broke the "
            "old one (OutOfOrderSequenceNumber, ambiguous_timeout, record_too_large, ...).",
            ["reason"],
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "mdm_broker_dead_letters_truncated_total",
            "Dead letters too large for the DLQ topic, stored cut with size and SHA-256 headers.",
            ["vendor"],
            registry=r,
        )
        self.kafka_healthy = Gauge(
            "mdm_broker_kafka_healthy",
            "1 when the last publish or probe was acked by Kafka, else 0.",
            registry=r,
        )
        self.kafka_healthy.set(1)
        self.kafka_connect_errors = Counter(
            "mdm_broker_kafka_connect_errors_total",
            "Kafka refusals and connection failures by cause (authentication, tls_unknown_ca, "
            "tls_hostname_mismatch, tls_certificate_expired, tls_handshake, topic_authorization, "
            "group_authorization, cluster_authorization, sasl_mechanism, unreachable, timeout, "
            "other). Each names a setting or ACL to fix; see docs/operations.md.",
            ["cause"],
            registry=r,
        )
        self.vendor_api_errors = Counter(
            "mdm_broker_vendor_api_errors_total",
            "Failed vendor API calls by vendor, operation and HTTP status (or 'network').",
            ["vendor", "operation", "status"],
            registry=r,
        )
        self.http_requests = Counter(
            "mdm_broker_http_requests_total",
            "Requests to the broker's HTTP server by route template and status class.",
            ["route", "status"],
            registry=r,
        )
