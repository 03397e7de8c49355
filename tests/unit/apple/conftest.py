"""Fixtures of the Apple unit tests: the simulator, a notification receiver and a client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.metrics import BrokerMetrics
from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig
from tests.unit.apple.receiver import Receiver


@pytest.fixture
async def sim() -> AsyncIterator[AppleSimulator]:
    simulator = AppleSimulator(
        SimConfig(), Faults(retry_window_s=0.4, attempt_timeout_s=5.0), seed=1
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def settings_for(sim: AppleSimulator, **overrides: object) -> AppleSettings:
    values: dict[str, object] = {
        "enabled": True,
        "tenants": {"acme": AppleTenantSettings(notification_auth_tokens=[SecretStr("hook")])},
        "api_base_url": sim.api_url,
        "api_backoff_s": 0.05,
        "api_timeout_s": 5.0,
    }
    values.update(overrides)
    return AppleSettings.model_validate(values)


@pytest.fixture
def metrics() -> BrokerMetrics:
    return BrokerMetrics()


@pytest.fixture
async def client(sim: AppleSimulator, metrics: BrokerMetrics) -> AsyncIterator[AppleApiClient]:
    async with AppleApiClient(settings_for(sim), SecretStr(sim.default.s_token), metrics) as c:
        yield c
