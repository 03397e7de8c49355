"""Every adapter follows the one lifecycle: idempotent start/stop, restart refused the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.android.settings import AndroidSettings
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.adapter import Adapter, AdapterContext
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.errors import NotStartedError
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher


def _adapters(tmp_path: Path) -> list[Adapter]:
    """Apple and Android adapters whose start() needs no network (reconciliation off, pullers
    back off on a missing key) built through the composition root's registry."""
    settings = BrokerSettings(
        apple=AppleSettings(
            enabled=True,
            reconcile_enabled=False,
            tenants={"acme": AppleTenantSettings(notification_auth_tokens=[SecretStr("t")])},
        ),
        android=AndroidSettings(enabled=True, service_account_file=tmp_path / "missing.json"),
    )
    health, metrics = KafkaHealth(), BrokerMetrics()
    ctx = AdapterContext(
        settings.kafka, KafkaPublisher(settings.kafka, health, metrics), health, metrics
    )
    built = [f(ctx) for f in factories(settings, ["apple", "android"])]
    return [a for a in built if a is not None]


async def test_adapters_start_and_stop_idempotently_and_refuse_a_restart(tmp_path: Path) -> None:
    adapters = _adapters(tmp_path)
    assert [a.name for a in adapters] == ["apple", "android"]
    for adapter in adapters:
        await adapter.start()
        await adapter.start()
        await adapter.stop(1.0)
        await adapter.stop(1.0)
        with pytest.raises(NotStartedError, match="was stopped and cannot be started again"):
            await adapter.start()


async def test_an_adapter_stopped_before_it_started_cannot_start(tmp_path: Path) -> None:
    for adapter in _adapters(tmp_path):
        await adapter.stop(1.0)
        with pytest.raises(NotStartedError):
            await adapter.start()
