"""Android-only metrics, declared against the broker's registry (prefix ``mdm_broker_android_``).

API failures are counted in the core's
``mdm_broker_vendor_api_errors_total{vendor="android"}``. Label values come from fixed sets.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60)


class RetryReason(StrEnum):
    """Why a puller backed off (label ``reason``)."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    NETWORK = "network"
    AUTH = "auth"
    CLIENT_ERROR = "client_error"


class NotAckedReason(StrEnum):
    """Why a non-empty set was left unacknowledged (label ``reason``)."""

    PUBLISH_FAILED = "publish_failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    ACK_FAILED = "ack_failed"


class AndroidMetrics:
    """The Android adapter's metrics, declared once per registry (one adapter per process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.retries = Counter(
            "mdm_broker_android_retries_total",
            "Puller backoffs after a failed pull or token fetch, by reason.",
            ["reason"],
            registry=registry,
        )
        self.not_acked = Counter(
            "mdm_broker_android_sets_not_acked_total",
            "Non-empty notification sets left unacknowledged (Google redelivers them), by reason.",
            ["reason"],
            registry=registry,
        )
        self.parked_pullers = Gauge(
            "mdm_broker_android_pullers_parked",
            "Pullers not pulling because Kafka is unhealthy.",
            registry=registry,
        )
        self.auth_ok = Gauge(
            "mdm_broker_android_auth_ok",
            "1 while the service account's credentials are accepted, 0 after a rejection.",
            registry=registry,
        )
        self.auth_ok.set(1)
        self.ack_latency = Histogram(
            "mdm_broker_android_ack_latency_seconds",
            "Time from a notification set's arrival to its acknowledgeNotificationSet (20 s deadline).",
            buckets=_ACK_BUCKETS,
            registry=registry,
        )
        self.deadline_missed = Counter(
            "mdm_broker_android_ack_deadline_missed_total",
            "Notification sets not acked because the ack budget was exceeded (Google redelivers).",
            registry=registry,
        )
        self.sets = Counter(
            "mdm_broker_android_notification_sets_total",
            "Notification sets pulled, by outcome (acked, empty, not_acked).",
            ["outcome"],
            registry=registry,
        )
