"""The consumer's handler-duration histogram is exposed exactly like prometheus_client's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from broker.consumer.metrics import _BUCKETS, ConsumerMetrics

NAME = "mdm_broker_consumer_handler_duration_seconds"


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(NAME) and "_created" not in line]


def test_handler_duration_exposition_matches_a_prometheus_histogram() -> None:
    ours_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    ours = ConsumerMetrics.for_registry(ours_registry).handler_duration
    reference = Histogram(
        NAME, "reference", ["group"], buckets=_BUCKETS, registry=reference_registry
    )
    # on a bound, between bounds, below the first, above the last, two groups
    for group, seconds in [("a", 0.0005), ("a", 0.0007), ("a", 0.00001), ("a", 99.0), ("b", 0.25)]:
        ours.labels(group).observe(seconds)
        reference.labels(group).observe(seconds)
    assert _lines(ours_registry) == _lines(reference_registry)
    assert ours_registry.get_sample_value(f"{NAME}_count", {"group": "a"}) == 4
    assert ours_registry.get_sample_value(f"{NAME}_bucket", {"group": "a", "le": "0.0005"}) == 2


def test_handler_duration_is_declared_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert ConsumerMetrics.for_registry(registry) is ConsumerMetrics.for_registry(registry)
    assert registry.get_sample_value(f"{NAME}_count", {"group": "g"}) is None
