"""The Kapua simulator behaves like Kapua: paging, count/query, lifecycle, deletion, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from simulators.kapua import KapuaSimulator, SimConfig
from simulators.kapua.state import SimState, now_utc


@pytest.fixture
async def sim() -> AsyncIterator[KapuaSimulator]:
    async with KapuaSimulator(SimConfig(devices=2, tick_s=3600)) as simulator:
        yield simulator


class Api:
    def __init__(self, http: aiohttp.ClientSession, sim: KapuaSimulator, token: str) -> None:
        self.http, self.sim, self.token = http, sim, token

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        async with self.http.request(
            method,
            f"{self.sim.base_url}/{path}",
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as response:
            raw = await response.read()
            return response.status, (await response.json() if raw else None)


@pytest.fixture
async def api(sim: KapuaSimulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sim.base_url}/authentication/user",
            json={"username": "kapua-sys", "password": "kapua-password"},
        ) as response:
            assert response.status == 200
            token = await response.json()
        assert token["type"] == "accessToken"
        assert {"tokenId", "refreshToken", "expiresOn", "refreshExpiresOn"} <= set(token)
        yield Api(http, sim, token["tokenId"])


def run_steps(state: SimState, op_id: str, steps: int) -> None:
    """Apply the next ``steps`` NOTIFYs of an operation regardless of the clock."""
    op = state.operations[op_id]
    for _ in range(steps):
        state.advance(op.steps[op.next_step].at)


async def test_notifications_paging_limit_exceeded_total_count_and_query(
    sim: KapuaSimulator, api: Api
) -> None:
    state = sim.state
    device = next(iter(state.devices["AQ"]))
    op = state.start_operation("AQ", device, steps=5, step_interval_s=10, fail=False)
    run_steps(state, op.id, 5)
    base = f"_/devices/{device}/operations/{op.id}/notifications"
    status, page = await api.call("GET", base, offset="0", limit="2", askTotalCount="true")
    assert status == 200
    assert page["type"] == "managementOperationNotificationListResult"
    assert (page["size"], page["limitExceeded"], page["totalCount"]) == (2, True, 5)
    status, last = await api.call("GET", base, offset="4", limit="2")
    assert (last["size"], last["limitExceeded"], "totalCount" in last) == (1, False, False)
    sent = [r["sentOn"] for r in page["items"] + last["items"]]
    assert sent == sorted(sent)
    progress = [r["progress"] for r in page["items"]]
    assert progress == sorted(progress)
    status, query = await api.call("POST", base + "/_query", {"offset": 1, "limit": 3})
    assert (query["size"], query["limitExceeded"]) == (3, True)
    status, count = await api.call("POST", base + "/_count", {"offset": 0, "limit": 1})
    assert count == {"type": "countResult", "count": 5}
    one = page["items"][0]
    status, single = await api.call("GET", f"{base}/{one['id']}")
    assert (status, single) == (200, one)
    assert await api.call("DELETE", f"{base}/{one['id']}") == (204, None)
    status, missing = await api.call("GET", f"{base}/{one['id']}")
    assert status == 404
    assert missing["type"] == "entityNotFoundExceptionInfo"
    assert missing["kapuaErrorCode"] == "ENTITY_NOT_FOUND"


async def test_completion_closes_operation_writes_log_and_deletes_rows(
    sim: KapuaSimulator, api: Api
) -> None:
    state = sim.state
    device = next(iter(state.devices["AQ"]))
    op = state.start_operation("AQ", device, steps=3, step_interval_s=10, fail=True)
    run_steps(state, op.id, 3)
    path = f"AQ/devices/{device}/operations/{op.id}"
    status, count = await api.call("POST", path + "/notifications/_count", {})
    assert count["count"] == 3
    run_steps(state, op.id, 1)  # the FAILED NOTIFY
    status, doc = await api.call("GET", path)
    assert doc["status"] == "FAILED"
    assert doc["endedOn"] >= doc["startedOn"]
    assert doc["log"].count("\n") == 4
    assert "failed" in doc["log"].splitlines()[-1]
    status, count = await api.call("POST", path + "/notifications/_count", {})
    assert count["count"] == 0  # Kapua deletes the rows of a closed operation
    status, listing = await api.call("GET", f"AQ/devices/{device}/operations", askTotalCount="true")
    assert listing["totalCount"] == 1
    assert await api.call("DELETE", path) == (204, None)
    status, gone = await api.call("GET", path)
    assert status == 404
    assert gone["entityType"] == "deviceManagementOperation"


async def test_terminal_row_can_linger_before_close(sim: KapuaSimulator, api: Api) -> None:
    state = sim.state
    state.config.terminal_row_linger_s = 5.0
    device = next(iter(state.devices["AQ"]))
    op = state.start_operation("AQ", device, steps=1, step_interval_s=10, fail=False)
    run_steps(state, op.id, 2)
    assert [r["status"] for r in op.rows] == ["RUNNING", "COMPLETED"]
    assert op.doc["status"] == "RUNNING"
    assert op.close_at is not None
    state.advance(op.close_at)
    assert op.doc["status"] == "COMPLETED"
    assert op.rows == []


async def test_tokens_expire_refresh_invalidates_and_401_is_empty(sim: KapuaSimulator) -> None:
    sim.state.config.token_ttl_s = 0.2
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sim.base_url}/authentication/apikey", json={"apiKey": "12345678kapua-key"}
        ) as response:
            token = await response.json()
        body = {"tokenId": token["tokenId"], "refreshToken": token["refreshToken"]}
        async with http.post(f"{sim.base_url}/authentication/refresh", json=body) as response:
            assert response.status == 200
            fresh = await response.json()
        async with http.post(f"{sim.base_url}/authentication/refresh", json=body) as response:
            assert response.status == 401  # refresh token already used
            assert (await response.json())["httpErrorCode"] == 401
        for used in (token["tokenId"], "garbage"):
            async with http.get(
                f"{sim.base_url}/_/devices", headers={"Authorization": f"Bearer {used}"}
            ) as response:
                assert response.status == 401
                assert await response.read() == b""
        record = sim.state.tokens[fresh["tokenId"]]
        assert (record.expires - record.created).total_seconds() == pytest.approx(0.2)
        record.expires = now_utc() - timedelta(seconds=1)  # its 0.2 s lifetime is over
        async with http.get(
            f"{sim.base_url}/_/devices", headers={"Authorization": f"Bearer {fresh['tokenId']}"}
        ) as response:
            assert response.status == 401


async def test_control_api_starts_operations_in_bulk_and_reports(sim: KapuaSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sim.root_url}/control/operations",
            json={"count": 4, "steps": 2, "stepIntervalS": 100, "failEvery": 2},
        ) as response:
            started = (await response.json())["operations"]
        assert len(started) == 4
        assert len({o["deviceId"] for o in started}) == 2
        async with http.get(f"{sim.root_url}/control/state") as response:
            summary = await response.json()
        assert summary["operations"] == {"RUNNING": 4}
        failing = [sim.state.operations[o["id"]].steps[-1].status for o in started]
        assert failing == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]
