"""Apple-only metrics, declared against the broker's registry (prefix ``mdm_broker_apple_``).

Webhook intake and API failures are counted in the core's metrics (:class:`broker.metrics.
BrokerMetrics`, ``vendor="apple"``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge


class AppleMetrics:
    """The Apple adapter's metrics, declared once per registry (one adapter per process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tracked_events = Gauge(
            "mdm_broker_apple_tracked_events",
            "Apple async events tracked for reconciliation and not yet final.",
            registry=registry,
        )
