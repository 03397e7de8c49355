"""broker/metrics.py: children resolved once per label set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from broker.metrics import BrokerMetrics, Children


def test_children_are_the_metrics_own_children_resolved_once() -> None:
    metrics = BrokerMetrics(CollectorRegistry())
    received = Children(metrics.notifications_received)
    first = received("apple", "mdm.test")
    assert received("apple", "mdm.test") is first
    assert first is metrics.notifications_received.labels("apple", "mdm.test")
    first.inc()
    received("apple", "mdm.unknown").inc(2)
    value = metrics.registry.get_sample_value
    labels = {"vendor": "apple", "type": "mdm.test"}
    assert value("mdm_broker_notifications_received_total", labels) == 1
    labels["type"] = "mdm.unknown"
    assert value("mdm_broker_notifications_received_total", labels) == 2
