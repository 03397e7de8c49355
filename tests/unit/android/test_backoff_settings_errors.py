"""Settings validation, Google error descriptions, the adapter factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.android import build
from adapters.android.api import describe_google_error, status_label
from adapters.android.settings import AndroidSettings
from broker.adapter import AdapterContext
from broker.app.config import BrokerSettings
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher


def test_enabled_needs_a_key_and_budget_stays_under_google_deadline(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="service_account_file"):
        AndroidSettings(enabled=True)
    with pytest.raises(ValidationError, match="ack_budget_s"):
        AndroidSettings(ack_budget_s=20.0)
    with pytest.raises(ValidationError, match="backoff_max_s"):
        AndroidSettings(backoff_initial_s=5.0, backoff_max_s=1.0)
    ok = AndroidSettings(enabled=True, service_account_file=tmp_path / "sa.json")
    assert ok.ack_budget_s == 15.0
    assert ok.pullers == 4


def test_inline_key_is_secret_in_repr() -> None:
    settings = AndroidSettings(enabled=True, service_account_json='{"private_key": "KEY"}')
    assert "KEY" not in repr(settings)


def test_google_error_description_and_bounded_status_labels() -> None:
    body = (
        b'{"error": {"code": 429, "message": "Rate Limit Exceeded", "errors": '
        b'[{"domain": "usageLimits", "reason": "rateLimitExceeded"}], "status": "RESOURCE_EXHAUSTED"}}'
    )
    assert describe_google_error(429, body) == "HTTP 429 rateLimitExceeded: Rate Limit Exceeded"
    assert describe_google_error(502, b"<html>") == "HTTP 502"
    assert [status_label(s) for s in (None, 401, 403, 404, 429, 400, 418, 500, 503)] == [
        "network",
        "401",
        "403",
        "404",
        "429",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
    ]


def test_build_returns_none_when_disabled(tmp_path: Path) -> None:
    metrics = BrokerMetrics()
    health = KafkaHealth()
    settings = BrokerSettings()
    publisher = KafkaPublisher(settings.kafka, health, metrics)
    assert (
        build(AdapterContext(settings.kafka, publisher, health, metrics), settings.android) is None
    )
    enabled = settings.model_copy(
        update={"android": AndroidSettings(enabled=True, service_account_file=tmp_path / "sa.json")}
    )
    adapter = build(AdapterContext(enabled.kafka, publisher, health, metrics), enabled.android)
    assert adapter is not None
    assert adapter.name == "android"
    assert adapter.routes() == []
    assert adapter.ready()
