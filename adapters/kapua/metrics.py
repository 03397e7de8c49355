"""Kapua-specific metrics, declared once against the broker's registry (prefix ``mdm_broker_``).

API failures are counted in the core's ``vendor_api_errors`` of
:class:`broker.metrics.BrokerMetrics`. Label values are members of
the enums below, never ids, paths or tokens.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter, Gauge

from broker.metrics import BrokerMetrics


class Endpoint(StrEnum):
    """Label ``endpoint``/``operation``: which kind of Kapua call."""

    LOGIN = "login"
    REFRESH = "refresh"
    LOGOUT = "logout"
    DEVICES = "devices"
    OPERATIONS = "operations"
    OPERATION = "operation"
    NOTIFICATIONS = "notifications"
    NOTIFICATIONS_COUNT = "notifications_count"


class TokenEvent(StrEnum):
    LOGIN = "login"
    REFRESH = "refresh"
    REFRESH_FAILED = "refresh_failed"
    RELOGIN_401 = "relogin_401"
    LOGOUT = "logout"


class Closed(StrEnum):
    """How a watched operation stopped being watched."""

    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"  # 404 while watched: mdm.operation.vanished
    STALE = "stale"
    UNKNOWN_STATUS = "unknown_status"  # a status the broker does not know, past its grace


class WatchOutcome(StrEnum):
    ACCEPTED = "accepted"
    INVALID = "invalid"


class KapuaMetrics:
    """The Kapua adapter's metrics plus a handle on the core's (declared once per registry)."""

    def __init__(self, broker: BrokerMetrics) -> None:
        self.broker = broker
        r = broker.registry
        self.token_events = Counter(
            "mdm_broker_kapua_token_events_total",
            "Kapua access-token lifecycle events (login, refresh, 401 re-login, ...).",
            ["event"],
            registry=r,
        )
        self.operations_closed = Counter(
            "mdm_broker_kapua_operations_closed_total",
            "Watched Kapua operations that stopped being watched, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.watch_requests = Counter(
            "mdm_broker_kapua_watch_requests_total",
            "Explicit watch requests read from the watch topic, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.rebalances = Counter(
            "mdm_broker_kapua_rebalances_total",
            "State-topic partitions assigned to or revoked from this instance.",
            ["event"],
            registry=r,
        )
        self.watched_operations = Gauge(
            "mdm_broker_kapua_watched_operations",
            "Kapua operations currently watched by this instance.",
            registry=r,
        )
        self.poll_requests = Counter(
            "mdm_broker_kapua_poll_requests_total",
            "Kapua REST requests made by the poller, by endpoint kind and outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.cursor_lag = Gauge(
            "mdm_broker_kapua_cursor_lag_seconds",
            "Age of the oldest unpublished progress a watched operation is known to have.",
            registry=r,
        )
        self.state_write_failures = Counter(
            "mdm_broker_kapua_state_write_failures_total",
            "Kapua state-topic writes (watch, cursor, done, tombstones) Kafka did not ack; retried.",
            ["kind"],
            registry=r,
        )
        self.retries = Counter(
            "mdm_broker_kapua_request_retries_total",
            "Kapua requests retried after a 5xx or network error, by endpoint.",
            ["endpoint"],
            registry=r,
        )

    def request(self, endpoint: Endpoint, outcome: str) -> None:
        self.poll_requests.labels(endpoint.value, outcome).inc()

    def api_error(self, endpoint: Endpoint, status: int | None) -> None:
        label = "network" if status is None else str(status)
        self.broker.vendor_api_errors.labels("kapua", endpoint.value, label).inc()

    def token(self, event: TokenEvent) -> None:
        self.token_events.labels(event.value).inc()
