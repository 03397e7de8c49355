"""Android-only metrics, declared against the broker's registry.

The EMM puller's are prefixed ``mdm_broker_android_``; the AMAPI (Pub/Sub) puller has the same
shape under ``mdm_broker_amapi_`` (its unit is a message, not a set) plus its lease counters.
API failures are counted in the core's ``mdm_broker_vendor_api_errors_total{vendor="android"}``.
Label values come from fixed sets.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60)
_AMAPI_ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class RetryReason(StrEnum):
    """Why a puller backed off (label ``reason``)."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    NETWORK = "network"
    AUTH = "auth"
    CLIENT_ERROR = "client_error"


class NotAckedReason(StrEnum):
    """Why a non-empty set (or Pub/Sub message) was left unacknowledged (label ``reason``)."""

    PUBLISH_FAILED = "publish_failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    ACK_FAILED = "ack_failed"


class AndroidMetrics:
    """The EMM puller's metrics, declared once per registry (one adapter per process).

    ``prefix``, ``unit`` and ``batches`` name the same shape for the AMAPI puller.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str = "mdm_broker_android",
        unit: str = "sets",
        batches: str = "notification_sets",
        ack_help: str = "Time from a notification set's arrival to its acknowledgeNotificationSet "
        "(20 s deadline).",
        ack_buckets: tuple[float, ...] = _ACK_BUCKETS,
    ) -> None:
        self.retries = Counter(
            f"{prefix}_retries_total",
            "Puller backoffs after a failed pull or token fetch, by reason.",
            ["reason"],
            registry=registry,
        )
        self.not_acked = Counter(
            f"{prefix}_{unit}_not_acked_total",
            f"Non-empty {unit} left unacknowledged (Google redelivers them), by reason.",
            ["reason"],
            registry=registry,
        )
        self.parked_pullers = Gauge(
            f"{prefix}_pullers_parked",
            "Pullers not pulling because Kafka is unhealthy.",
            registry=registry,
        )
        self.auth_ok = Gauge(
            f"{prefix}_auth_ok",
            "1 while the service account's credentials are accepted, 0 after a rejection.",
            registry=registry,
        )
        self.auth_ok.set(1)
        self.ack_latency = Histogram(
            f"{prefix}_ack_latency_seconds", ack_help, buckets=ack_buckets, registry=registry
        )
        self.deadline_missed = Counter(
            f"{prefix}_ack_deadline_missed_total",
            f"{unit.capitalize()} not acked because the ack budget was exceeded (Google redelivers).",
            registry=registry,
        )
        self.sets = Counter(
            f"{prefix}_{batches}_total",
            f"{unit.capitalize()} pulled, by outcome (acked, empty, not_acked"
            + (", dead_lettered, nacked)." if unit == "messages" else ")."),
            ["outcome"],
            registry=registry,
        )


class ModAckKind(StrEnum):
    """Why modifyAckDeadline was sent (label ``kind``)."""

    EXTEND = "extend"
    NACK = "nack"


class MessageOutcome(StrEnum):
    """What became of one pulled Pub/Sub message (label ``outcome``; ``empty`` counts pulls)."""

    ACKED = "acked"
    EMPTY = "empty"
    DEAD_LETTERED = "dead_lettered"
    NACKED = "nacked"
    NOT_ACKED = "not_acked"


class AmapiMetrics(AndroidMetrics):
    """The AMAPI (Pub/Sub) puller's metrics: the EMM shape under ``mdm_broker_amapi_``, per
    message (``mdm_broker_amapi_messages_total{outcome}``), plus modifyAckDeadline counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            registry,
            prefix="mdm_broker_amapi",
            unit="messages",
            batches="messages",
            ack_help="Time from a Pub/Sub message's arrival (pull response) to its confirmed "
            "acknowledge (lease: the subscription's ack deadline, extended while publishing).",
            ack_buckets=_AMAPI_ACK_BUCKETS,
        )
        self.modacks = Counter(
            "mdm_broker_amapi_modify_ack_deadline_total",
            "Ack ids sent in modifyAckDeadline, by kind (extend: publish slow; nack: failed).",
            ["kind"],
            registry=registry,
        )
