"""ConsumerSettings validation and the pure parts of ``mdm-broker tail``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from broker.app.tail import TailOptions, format_json, format_pretty
from broker.consumer import ConsumerSettings
from broker.events import EventType, Vendor, encode_event
from tests.integration.consumer.helpers import sample_event


def test_dlq_topic_defaults_per_topic_and_group() -> None:
    assert ConsumerSettings(group_id="billing").effective_dlq_topic == "mdm.events.billing.dlq"
    assert ConsumerSettings(group_id="g", dlq_topic="x").effective_dlq_topic == "x"


@pytest.mark.parametrize(
    "bad",
    [
        {"group_id": ""},
        {"group_id": "g", "max_attempts": 0},
        {"group_id": "g", "retry_backoff_initial_s": 5, "retry_backoff_max_s": 1},
        {"group_id": "g", "heartbeat_interval_s": 10, "session_timeout_s": 10},
        {"group_id": "g", "unknown": 1},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ConsumerSettings(**bad)


def test_tail_filters_combine_kinds_with_and_values_with_or() -> None:
    apple = sample_event(1, vendor=Vendor.APPLE, tenant="u1")
    kapua = sample_event(2, vendor=Vendor.KAPUA, tenant="s1", type=EventType.UNKNOWN)
    assert TailOptions().matches(apple)
    both = TailOptions(vendors=frozenset({"apple", "kapua"}))
    assert both.matches(apple)
    assert both.matches(kapua)
    narrow = TailOptions(vendors=frozenset({"kapua"}), types=frozenset({"mdm.test"}))
    assert not narrow.matches(kapua)
    assert not TailOptions(tenants=frozenset({"u2"})).matches(apple)


def test_tail_formats() -> None:
    event = sample_event(7)
    assert format_json(event).encode() == encode_event(event)  # the canonical bytes
    line = format_pretty(event, partition=2, offset=40)
    assert "id=e7" in line
    assert "[p2@40]" in line
    assert "raw" not in line
