"""OAuth and API failures at the simulator: clear error, backoff, recovery once fixed (real Kafka)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.android.adapter import AndroidAdapter
from adapters.android.settings import EMM_SCOPE
from broker.adapter import AdapterContext
from broker.app.config import BrokerSettings
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from simulators.android.control import Fault
from simulators.android.keys import generate_service_account, write_service_account
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import EmmSimulator, SimulatorConfig
from tests.e2e.android.support import android_settings, simulator_with_key, wait_until

pytestmark = pytest.mark.kafka

EMAIL = "broker@sim-project.iam.gserviceaccount.com"


@dataclass
class Rig:
    sim: EmmSimulator
    adapter: AndroidAdapter
    metrics: BrokerMetrics
    key_path: Path

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def retries(self, reason: str) -> float:
        return self.metric("mdm_broker_android_retries_total", reason=reason)

    async def deliver(self, count: int, timeout_s: float = 20.0) -> bool:
        """Enqueue ``count`` fresh notifications and wait until all acked."""
        target = self.sim.pool.stats.acked_notifications + count
        self.sim.pool.enqueue(generate(count, first_seq=self.sim.pool.stats.enqueued))
        return await wait_until(
            lambda: self.sim.pool.stats.acked_notifications >= target, timeout_s
        )


@pytest.fixture
async def rig(
    tmp_path: Path, broker_settings: BrokerSettings, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    key = tmp_path / "sa.json"
    sim = simulator_with_key(
        key, SimulatorConfig(hold_s=0.5, ack_deadline_s=2.0, rate_limit_qpm=None)
    )
    async with SimulatorServer(sim) as server:
        settings = broker_settings.model_copy(
            update={"android": android_settings(server, key, pullers=2, **overrides)}
        )
        metrics = BrokerMetrics()
        health = KafkaHealth()
        async with KafkaPublisher(settings.kafka, health, metrics) as publisher:
            adapter = AndroidAdapter(
                AdapterContext(settings.kafka, publisher, health, metrics), settings.android
            )
            await adapter.start()
            try:
                yield Rig(sim, adapter, metrics, key)
            finally:
                await adapter.stop(5.0)


async def test_bad_key_clear_error_backoff_then_recovers_after_key_file_fixed(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    assert await rig.deliver(5)
    # The key is rotated at Google: the broker's key no longer verifies.
    new_doc, new_public = generate_service_account(client_email=EMAIL)
    rig.sim.auth.accounts[EMAIL] = [new_public]
    rig.sim.auth.expire_all()
    caplog.set_level(logging.INFO, logger="adapters.android")
    rig.sim.pool.enqueue(generate(5, first_seq=1000))
    assert await wait_until(lambda: rig.retries("auth") >= 3, 15)
    assert not rig.adapter.ready()
    assert rig.metric("mdm_broker_android_auth_ok") == 0
    assert any("Invalid JWT Signature" in r.getMessage() for r in caplog.records)
    assert rig.sim.pool.stats.acked_notifications == 5  # nothing acked while unauthenticated
    # The operator installs the new key file; the next token fetch reads it.
    write_service_account(rig.key_path, new_doc)
    assert await wait_until(lambda: rig.sim.pool.stats.acked_notifications >= 10, 15), (
        rig.sim.stats()
    )
    assert rig.adapter.ready()
    assert rig.metric("mdm_broker_android_auth_ok") == 1


async def test_scope_not_granted_clear_error_backoff_then_recovers(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    assert await rig.deliver(3)
    rig.sim.auth.accepted_scopes = {"https://www.googleapis.com/auth/cloud-platform"}
    rig.sim.auth.expire_all()
    caplog.set_level(logging.INFO, logger="adapters.android")
    rig.sim.pool.enqueue(generate(3, first_seq=1000))
    assert await wait_until(lambda: rig.retries("auth") >= 3, 15)
    assert not rig.adapter.ready()
    assert any("invalid_scope" in r.getMessage() for r in caplog.records)
    rig.sim.auth.accepted_scopes = {EMM_SCOPE}
    assert await wait_until(lambda: rig.sim.pool.stats.acked_notifications >= 6, 15)
    assert rig.adapter.ready()


async def test_expired_access_token_is_replaced_without_operator(rig: Rig) -> None:
    assert await rig.deliver(3)
    issued = rig.sim.auth.tokens_issued
    rig.sim.auth.expire_all()
    assert await rig.deliver(3)
    assert rig.sim.auth.tokens_issued > issued
    assert rig.retries("auth") == 0
    rejected = sum(
        rig.metric(
            "mdm_broker_vendor_api_errors_total", vendor="android", operation=op, status="401"
        )
        for op in ("pull", "ack")
    )
    assert rejected >= 1


async def test_expired_assertion_clock_skew_clear_error_then_recovers(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    assert await rig.deliver(2)
    rig.sim.auth.clock_offset_s = 2 * 3600  # the assertion's exp is two hours in the past
    rig.sim.auth.expire_all()
    caplog.set_level(logging.INFO, logger="adapters.android")
    rig.sim.pool.enqueue(generate(2, first_seq=1000))
    assert await wait_until(lambda: rig.retries("auth") >= 2, 15)
    assert any("short-lived token" in r.getMessage() for r in caplog.records)
    rig.sim.auth.clock_offset_s = 0
    assert await wait_until(lambda: rig.sim.pool.stats.acked_notifications >= 4, 15)


@pytest.mark.parametrize("rig", [{"token_refresh_margin_s": 2.0}], indirect=True, ids=["margin2s"])
async def test_token_refreshed_ahead_of_expiry(rig: Rig) -> None:
    rig.sim.auth.token_lifetime_s = 3
    rig.sim.auth.expire_all()  # next token gets the 3 s lifetime, renewed after 1 s
    assert await rig.deliver(1)
    issued = rig.sim.auth.tokens_issued
    assert await wait_until(lambda: rig.sim.auth.tokens_issued >= issued + 2, 10)
    assert await rig.deliver(1)
    errors_401_before = rig.metric(
        "mdm_broker_vendor_api_errors_total", vendor="android", operation="pull", status="401"
    )
    # From here on tokens are renewed before they expire: no further 401s.
    assert await wait_until(lambda: rig.sim.auth.tokens_issued >= issued + 4, 10)
    assert (
        rig.metric(
            "mdm_broker_vendor_api_errors_total", vendor="android", operation="pull", status="401"
        )
        == errors_401_before
    )


async def test_429_5xx_and_network_errors_back_off_and_recover(rig: Rig) -> None:
    assert await rig.deliver(2)
    rig.sim.faults.extend(
        [Fault("pull", 503, 2), Fault("pull", 429, 2), Fault("pull", "network", 1)]
    )
    assert await rig.deliver(4)
    assert await wait_until(lambda: all(f.remaining == 0 for f in rig.sim.faults), 10)
    assert await wait_until(lambda: rig.retries("network") == 1, 5)
    assert rig.retries("server_error") == 2
    assert rig.retries("rate_limited") == 2
    assert rig.retries("network") == 1
    assert (
        rig.metric(
            "mdm_broker_vendor_api_errors_total", vendor="android", operation="pull", status="429"
        )
        == 2
    )


async def test_rate_limit_above_qpm_answers_429_and_everything_still_lands(rig: Rig) -> None:
    rig.sim.config.rate_limit_qpm = 240  # 4 requests/s for 2 pullers
    rig.sim.config.max_set_size = 2
    assert await rig.deliver(20, timeout_s=30)
    assert rig.sim.rate_limited > 0
    assert rig.retries("rate_limited") > 0
