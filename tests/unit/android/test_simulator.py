"""The EMM simulator's documented behaviour, over HTTP on loopback (no broker, no Kafka)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest

from simulators.android.auth import AuthState
from simulators.android.keys import generate_service_account
from simulators.android.notifications import generate
from simulators.android.pool import NotificationPool
from simulators.android.runner import SimulatorServer
from simulators.android.server import EmmSimulator, SimulatorConfig
from tests.e2e.android.support import wait_until

EMAIL = "broker@sim-project.iam.gserviceaccount.com"


@dataclass
class Client:
    server: SimulatorServer
    http: aiohttp.ClientSession
    token: str

    @property
    def sim(self) -> EmmSimulator:
        return self.server.simulator

    async def call(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        async with self.http.request(
            method,
            f"{self.server.base_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            body = await resp.read()
            return resp.status, (await resp.json() if body else None)

    async def pull(self, mode: str = "returnImmediately") -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/androidenterprise/v1/enterprises/pullNotificationSet", requestMode=mode
        )
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    async def ack(self, set_id: str) -> int:
        status, _ = await self.call(
            "POST",
            "/androidenterprise/v1/enterprises/acknowledgeNotificationSet",
            notificationSetId=set_id,
        )
        return status


async def _until(condition: Callable[[], bool]) -> None:
    """Bounded wait (5 s) for a state the simulator reaches on its own (a timer, a held pull)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    doc, public_pem = generate_service_account(client_email=EMAIL)
    sim = EmmSimulator(
        SimulatorConfig(hold_s=0.3, ack_deadline_s=0.3, max_set_size=10, rate_limit_qpm=None),
        AuthState(accounts={EMAIL: [public_pem]}),
    )
    async with SimulatorServer(sim) as server, aiohttp.ClientSession() as http:
        now = int(time.time())
        assertion = jwt.encode(
            {
                "iss": EMAIL,
                "scope": "https://www.googleapis.com/auth/androidenterprise",
                "aud": server.token_url,
                "iat": now,
                "exp": now + 600,
            },
            doc["private_key"],
            algorithm="RS256",
        )
        async with http.post(
            server.token_url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        ) as resp:
            assert resp.status == 200
            token = (await resp.json())["access_token"]
        yield Client(server, http, token)


async def test_empty_set_omits_the_set_id(client: Client) -> None:
    body = await client.pull()
    assert body == {"kind": "androidenterprise#notificationSet"}


async def test_wait_mode_holds_then_returns_when_notifications_arrive(client: Client) -> None:
    waiting = asyncio.create_task(client.pull("waitForNotifications"))
    await _until(lambda: client.sim.pool.active_pulls == 1)
    assert not waiting.done()
    client.sim.pool.enqueue(generate(3))
    body = await asyncio.wait_for(waiting, 5)
    assert len(body["notification"]) == 3
    assert body["notificationSetId"]


async def test_wait_mode_returns_empty_after_the_hold(client: Client) -> None:
    body = await asyncio.wait_for(client.pull("waitForNotifications"), 5)
    assert "notificationSetId" not in body


async def test_ack_removes_the_set_and_is_recorded(client: Client) -> None:
    client.sim.pool.enqueue(generate(4))
    body = await client.pull()
    assert await client.ack(body["notificationSetId"]) == 204
    assert client.sim.pool.stats.acked_notifications == 4
    assert client.sim.pool.acked[0].notifications == body["notification"]
    assert client.sim.pool.expire_all_now() == 0  # its deadline timer is gone with it
    assert "notificationSetId" not in await client.pull()  # nothing comes back
    assert await client.ack("no-such-set") == 404


async def test_unacked_set_is_redelivered_in_a_new_set_after_the_deadline(client: Client) -> None:
    notifications = generate(4)
    client.sim.pool.enqueue(notifications)
    first = await client.pull()
    await _until(lambda: client.sim.pool.stats.expired_sets == 1)  # the 0.3 s ack deadline
    second = await client.pull()
    assert second["notificationSetId"] != first["notificationSetId"]
    assert second["notification"] == first["notification"] == notifications
    stats = client.sim.pool.stats
    assert (stats.expired_sets, stats.redelivered_notifications) == (1, 4)
    assert await client.ack(first["notificationSetId"]) == 204  # late ack: accepted, ignored
    assert stats.late_acks == 1
    assert stats.acked_notifications == 0


async def test_pending_is_split_between_concurrent_pullers(client: Client) -> None:
    client.sim.config.hold_s = 10.0
    pulls = [asyncio.create_task(client.pull("waitForNotifications")) for _ in range(4)]
    assert await wait_until(lambda: client.sim.pool.active_pulls == 4, 5)
    client.sim.pool.enqueue(generate(8))
    bodies = await asyncio.wait_for(asyncio.gather(*pulls), 5)
    sizes = sorted(len(b.get("notification", [])) for b in bodies)
    assert sum(sizes) == 8
    assert sizes == [2, 2, 2, 2]
    assert len({b["notificationSetId"] for b in bodies}) == 4


async def test_bad_or_missing_token_is_401_in_google_format(client: Client) -> None:
    client.token = "ya29.forged"
    status, body = await client.call(
        "POST", "/androidenterprise/v1/enterprises/pullNotificationSet"
    )
    assert status == 401
    assert body["error"]["status"] == "UNAUTHENTICATED"
    assert body["error"]["errors"][0]["reason"] == "authError"


async def test_rate_limit_answers_429_with_google_error_json(client: Client) -> None:
    client.sim.config.rate_limit_qpm = 6  # one request per ten seconds
    assert (await client.pull()) is not None
    status, body = await client.call(
        "POST", "/androidenterprise/v1/enterprises/pullNotificationSet"
    )
    assert status == 429
    assert body["error"]["code"] == 429
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    assert client.sim.rate_limited == 1


async def test_send_test_push_notification_enqueues_a_test_notification(client: Client) -> None:
    status, body = await client.call(
        "POST", "/androidenterprise/v1/enterprises/LC123/sendTestPushNotification"
    )
    assert status == 200
    assert body["topicName"].endswith("play-work-LC123")
    pulled = await client.pull()
    (n,) = pulled["notification"]
    assert (n["enterpriseId"], n["notificationType"]) == ("LC123", "testNotification")


async def test_control_api_load_stats_and_settings(client: Client) -> None:
    base = client.server.base_url
    async with client.http.post(f"{base}/control/load", json={"count": 25, "seed": 1}) as resp:
        assert (await resp.json()) == {"enqueued": 25}
    async with client.http.post(
        f"{base}/control/settings", json={"max_set_size": 5, "ack_deadline_s": 9}
    ) as resp:
        assert (await resp.json())["max_set_size"] == 5
    body = await client.pull()
    assert len(body["notification"]) == 5
    await client.ack(body["notificationSetId"])
    async with client.http.get(f"{base}/control/stats") as resp:
        stats = await resp.json()
    assert (stats["enqueued"], stats["acked_notifications"], stats["pending"]) == (25, 5, 20)
    async with client.http.get(f"{base}/control/acked") as resp:
        (acked,) = await resp.json()
    assert acked["size"] == 5
    async with client.http.post(f"{base}/control/faults", json={"status": 418}) as resp:
        assert resp.status == 200
    async with client.http.post(f"{base}/control/faults", json={"status": "bogus"}) as resp:
        assert resp.status == 400


async def test_pool_retention_drops_old_pending() -> None:
    now = [100.0]
    pool = NotificationPool(retention_s=60.0, clock=lambda: now[0])
    pool.enqueue(generate(2))
    now[0] += 61.0  # past the retention
    assert await pool.pull(wait=False, hold_s=0) == (None, [])
    assert pool.stats.dropped_notifications == 2
    pool.close()
