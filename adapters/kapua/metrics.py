"""Kapua-specific metrics, declared once against the broker's registry (prefix ``mdm_broker_``).

The shared ones (``vendor_api_errors``, ``kapua_poll_requests``, ``kapua_watched_operations``,
``kapua_cursor_lag``) come from :class:`broker.metrics.BrokerMetrics`. Label values are members of
the enums below, never ids, paths or tokens.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter

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
    DELETED = "deleted"
    STALE = "stale"


class WatchOutcome(StrEnum):
    ACCEPTED = "accepted"
    INVALID = "invalid"


class KapuaMetrics:
    """Counters of the Kapua adapter plus handles on the shared broker metrics."""

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
        self.retries = Counter(
            "mdm_broker_kapua_request_retries_total",
            "Kapua requests retried after a 5xx or network error, by endpoint.",
            ["endpoint"],
            registry=r,
        )

    def request(self, endpoint: Endpoint, outcome: str) -> None:
        self.broker.kapua_poll_requests.labels(endpoint.value, outcome).inc()

    def api_error(self, endpoint: Endpoint, status: int | None) -> None:
        label = "network" if status is None else str(status)
        self.broker.vendor_api_errors.labels("kapua", endpoint.value, label).inc()

    def token(self, event: TokenEvent) -> None:
        self.token_events.labels(event.value).inc()
