"""KapuaClient against the Kapua simulator: login, refresh, 401 re-login, error mapping, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from adapters.kapua.client import KapuaClient
from adapters.kapua.errors import (
    KapuaAuthError,
    KapuaNotFoundError,
    KapuaRequestError,
    KapuaUnavailableError,
)
from adapters.kapua.metrics import KapuaMetrics
from adapters.kapua.settings import KapuaSettings
from broker.errors import VendorAuthError, VendorUnavailableError
from broker.metrics import BrokerMetrics
from simulators.kapua import KapuaSimulator, SimConfig


@pytest.fixture
async def sim() -> AsyncIterator[KapuaSimulator]:
    async with KapuaSimulator(SimConfig(devices=3, token_ttl_s=1800)) as simulator:
        yield simulator


def make_client(sim: KapuaSimulator, **overrides: object) -> tuple[KapuaClient, KapuaMetrics]:
    values: dict[str, object] = {
        "enabled": True,
        "base_url": sim.base_url,
        "username": "kapua-sys",
        "password": "kapua-password",
        "backoff_base_s": 0.01,
        "max_requests_per_s": 1000,
    }
    values.update(overrides)
    settings = KapuaSettings.model_validate(values)
    metrics = KapuaMetrics(BrokerMetrics(CollectorRegistry()))
    return KapuaClient(settings, metrics, user_agent="test-client"), metrics


def sample(metrics: KapuaMetrics, name: str, **labels: str) -> float:
    value = metrics.broker.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_login_with_password_and_list_devices_via_scope_alias(sim: KapuaSimulator) -> None:
    client, metrics = make_client(sim)
    await client.start()
    try:
        page = await client.list_devices("_", 0, 2)
        assert page.size == 2
        assert page.limit_exceeded is True
        assert client.tokens.scope_id == "AQ"
        assert sample(metrics, "mdm_broker_kapua_token_events_total", event="login") == 1
    finally:
        await client.stop()
    assert sim.state.counters["logouts"] == 1


async def test_login_with_api_key(sim: KapuaSimulator) -> None:
    client, _ = make_client(sim, username=None, password=None, api_key="12345678kapua-key")
    await client.start()
    try:
        assert (await client.list_devices("AQ", 0, 50)).size == 3
    finally:
        await client.stop()


async def test_bad_credentials_raise_auth_error(sim: KapuaSimulator) -> None:
    client, _ = make_client(sim, password="wrong")
    await client.start()
    try:
        with pytest.raises(VendorAuthError):
            await client.list_devices("AQ", 0, 50)
    finally:
        await client.stop()


async def test_token_refreshed_ahead_of_expiry_and_old_token_invalidated(
    sim: KapuaSimulator,
) -> None:
    sim.state.config.token_ttl_s = 2.0  # margin = lifetime / 4 = 0.5 s
    client, metrics = make_client(sim)
    await client.start()
    try:
        await client.list_devices("AQ", 0, 1)
        first = client.tokens.current
        assert first is not None
        # Pretend time passed: the token is inside its refresh margin.
        object.__setattr__(first, "expires_on", first.expires_on.replace(year=2000))
        await client.list_devices("AQ", 0, 1)
        second = client.tokens.current
        assert second is not None
        assert second.token_id != first.token_id
        assert sample(metrics, "mdm_broker_kapua_token_events_total", event="refresh") == 1
        assert sim.state.counters.get("refreshes") == 1
        # Kapua's rule: the refreshed-away token is invalid even though it had not expired.
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{sim.base_url}/AQ/devices",
                headers={"Authorization": f"Bearer {first.token_id}"},
            ) as response,
        ):
            assert response.status == 401
            assert await response.read() == b""
    finally:
        await client.stop()


async def test_refresh_refused_falls_back_to_login(sim: KapuaSimulator) -> None:
    client, metrics = make_client(sim)
    await client.start()
    try:
        await client.list_devices("AQ", 0, 1)
        token = client.tokens.current
        assert token is not None
        sim.state.refresh_index.clear()  # refresh token unknown to the server now
        object.__setattr__(token, "expires_on", token.expires_on.replace(year=2000))
        await client.list_devices("AQ", 0, 1)
        assert sample(metrics, "mdm_broker_kapua_token_events_total", event="refresh_failed") == 1
        assert sample(metrics, "mdm_broker_kapua_token_events_total", event="login") == 2
    finally:
        await client.stop()


async def test_401_with_empty_body_triggers_one_relogin(sim: KapuaSimulator) -> None:
    client, metrics = make_client(sim)
    await client.start()
    try:
        await client.list_devices("AQ", 0, 1)
        assert sim.state.expire_all_tokens() == 1
        page = await client.list_devices("AQ", 0, 1)
        assert page.size == 1
        assert sample(metrics, "mdm_broker_kapua_token_events_total", event="relogin_401") == 1
        assert sample(metrics, "mdm_broker_kapua_token_events_total", event="login") == 2
        assert (
            sample(
                metrics,
                "mdm_broker_vendor_api_errors_total",
                vendor="kapua",
                operation="devices",
                status="401",
            )
            == 1
        )
    finally:
        await client.stop()


async def test_500_device_management_timeout_is_retried_with_backoff(sim: KapuaSimulator) -> None:
    client, metrics = make_client(sim, max_retries=3)
    await client.start()
    try:
        sim.state.faults.fail_500_next = 2
        assert (await client.list_devices("AQ", 0, 5)).size == 3
        assert sample(metrics, "mdm_broker_kapua_request_retries_total", endpoint="devices") == 2
        sim.state.faults.fail_500_next = 5
        with pytest.raises(KapuaUnavailableError) as caught:
            await client.list_devices("AQ", 0, 5)
        assert isinstance(caught.value, VendorUnavailableError)
        assert caught.value.retriable
        assert caught.value.status == 500
        assert caught.value.kapua_error_code == "DEVICE_MANAGEMENT_TIMEOUT"
    finally:
        await client.stop()


async def test_404_and_403_map_to_typed_errors(sim: KapuaSimulator) -> None:
    client, _ = make_client(sim)
    await client.start()
    try:
        device = next(iter(sim.state.devices["AQ"]))
        with pytest.raises(KapuaNotFoundError) as caught:
            await client.get_operation("AQ", device, "bm90aGVyZQ")
        assert caught.value.kapua_error_code == "ENTITY_NOT_FOUND"
        assert not caught.value.retriable
        with pytest.raises(KapuaAuthError) as forbidden:
            await client.list_devices("Ag", 0, 5)  # another account's scope
        assert forbidden.value.kapua_error_code == "SUBJECT_UNAUTHORIZED"
    finally:
        await client.stop()


async def test_400_maps_to_request_error(sim: KapuaSimulator) -> None:
    client, _ = make_client(sim)
    await client.start()
    try:
        with pytest.raises(KapuaRequestError) as caught:
            await client.list_devices("AQ", -1, 5)
        assert caught.value.status == 400
        assert caught.value.kapua_error_code == "ILLEGAL_ARGUMENT"
    finally:
        await client.stop()


async def test_unreachable_kapua_is_a_retriable_error() -> None:
    settings = KapuaSettings(
        enabled=True,
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        max_retries=1,
        backoff_base_s=0.01,
    )
    client = KapuaClient(settings, KapuaMetrics(BrokerMetrics(CollectorRegistry())), "t")
    await client.start()
    try:
        with pytest.raises(KapuaUnavailableError):
            await client.list_devices("AQ", 0, 1)
    finally:
        await client.stop()
