"""The API client against the simulator: error bodies, retries, rate limits, pagination."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from adapters.apple.errors import AppleApiError, AppleAuthError
from broker.errors import VendorUnavailableError
from broker.metrics import BrokerMetrics
from simulators.apple.server import AppleSimulator
from tests.unit.apple.conftest import settings_for


async def test_service_config_is_cached_until_refresh(
    sim: AppleSimulator, client: AppleApiClient
) -> None:
    assert (await client.limits())["maxAssets"] == 25
    sim.config.limits["maxAssets"] = 10
    assert (await client.limits())["maxAssets"] == 25  # cached (5 minutes by default)
    assert (await client.service_config(refresh=True))["limits"]["maxAssets"] == 10


@pytest.mark.parametrize("status_200", [False, True])
async def test_token_errors_are_auth_errors_even_with_http_200(
    sim: AppleSimulator, status_200: bool
) -> None:
    sim.config.error_status_200 = status_200
    expired = sim.add_location(expires_in_days=-1)
    revoked = sim.add_location()
    revoked.revoked = True
    settings = settings_for(sim, api_max_attempts=1)
    for location, number in ((expired, 9621), (revoked, 9625)):
        async with AppleApiClient(settings, SecretStr(location.s_token)) as c:
            with pytest.raises(AppleAuthError) as info:
                await c.get_client_config()
        assert info.value.error_number == number
    async with AppleApiClient(settings, SecretStr("bm90LWpzb24=")) as c:
        with pytest.raises(AppleAuthError) as login:
            await c.get_client_config()
    assert login.value.error_number == 9601


async def test_malformed_authorization_header(sim: AppleSimulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sim.api_url + "/client/config", headers={"Authorization": "Token x"}) as resp,
    ):
        body = await resp.json()
    assert resp.status == 401
    assert body["errorNumber"] == 9722


async def test_rate_limit_9646_is_retried_after_retry_after(
    sim: AppleSimulator, client: AppleApiClient, metrics: BrokerMetrics
) -> None:
    await client.limits()  # the client now spaces requests for 15/s
    sim.config.limits["maxRequestPerSecond"] = 1  # Apple lowered the limit without notice
    results = await asyncio.gather(*(client.get_client_config() for _ in range(3)))
    assert all(r["uId"] == sim.default.uid for r in results)
    rejected = metrics.registry.get_sample_value(
        "mdm_broker_vendor_api_errors_total",
        {"vendor": "apple", "operation": "client_config", "status": "503"},
    )
    assert rejected is not None
    assert rejected >= 1


async def test_network_errors_become_vendor_unavailable_after_the_attempts(
    sim: AppleSimulator, metrics: BrokerMetrics
) -> None:
    settings = settings_for(sim, api_base_url="http://127.0.0.1:9/mdm/v2", api_max_attempts=2)
    async with AppleApiClient(settings, SecretStr(sim.default.s_token), metrics) as c:
        with pytest.raises(VendorUnavailableError):
            await c.event_status("e")
    failures = metrics.registry.get_sample_value(
        "mdm_broker_vendor_api_errors_total",
        {"vendor": "apple", "operation": "service_config", "status": "network"},
    )
    assert failures is not None


async def test_pagination_follows_next_page_index_and_since_version(
    sim: AppleSimulator, client: AppleApiClient
) -> None:
    sim.config.page_size = 3
    await client.manage_users(
        "create", [{"clientUserId": f"c{i}", "email": f"c{i}@example.com"} for i in range(10)]
    )
    assert await sim.wait_idle(10)
    first = await client.sync_users()
    assert first.pages == 4
    assert sorted(u["clientUserId"] for u in first.items) == sorted(f"c{i}" for i in range(10))
    assert first.version_id
    await client.manage_users("update", [{"clientUserId": "c3", "managedAppleId": "c3@org"}])
    assert await sim.wait_idle(10)
    changed = await client.sync_users(since_version_id=first.version_id)
    assert [(u["clientUserId"], u["status"]) for u in changed.items] == [("c3", "Associated")]
    with pytest.raises(AppleApiError) as bad_version:
        await client.sync_users(since_version_id="not-a-version")
    assert bad_version.value.error_number == 9721
    with pytest.raises(AppleApiError) as bad_page:
        await client._call("GET", "/users", operation="t", params={"pageIndex": "9"})
    assert bad_page.value.error_number == 9650
    assets = await client.sync_assets()
    assert assets.items == []
    assert assets.pages == 1
