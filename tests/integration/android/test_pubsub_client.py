"""The Pub/Sub REST client against the Pub/Sub simulator over HTTP (auth, shapes, errors)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.android.oauth import TokenProvider
from adapters.android.pubsub import PubsubClient
from broker.errors import VendorAuthError, VendorUnavailableError
from broker.metrics import BrokerMetrics
from simulators.android.pubsub_runner import PubsubSimulatorServer
from simulators.android.pubsub_server import PubsubSimConfig
from tests.e2e.android.amapi_support import amapi_settings, pubsub_simulator_with_key


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PubsubSimulatorServer]:
    sim = pubsub_simulator_with_key(
        tmp_path / "sa.json", PubsubSimConfig(hold_s=0.2, rate_limit_qps=None)
    )
    async with PubsubSimulatorServer(sim) as srv:
        yield srv


def client(
    server: PubsubSimulatorServer, session: aiohttp.ClientSession, key: Path, **kw: object
) -> PubsubClient:
    settings = amapi_settings(server, key, **kw)
    return PubsubClient(
        base_url=settings.api_base_url,
        subscription=settings.subscription,
        session=session,
        tokens=TokenProvider(settings, session),
        metrics=BrokerMetrics(),
        api_timeout_s=2.0,
    )


async def test_pull_modack_ack_round_trip(server: PubsubSimulatorServer, tmp_path: Path) -> None:
    sim = server.simulator
    async with aiohttp.ClientSession() as session:
        pubsub = client(server, session, tmp_path / "sa.json")
        assert await pubsub.pull(10, 5.0) == []  # held, then empty
        message_id = sim.publish_notification("ENROLLMENT", {"name": "enterprises/E/devices/D"})
        [got] = await pubsub.pull(10, 5.0)
        assert got.message_id == message_id
        assert got.delivery_attempt == 1
        assert set(got.message) == {"data", "attributes", "messageId", "publishTime"}
        await pubsub.modify_ack_deadline([got.ack_id], 0, 2.0)  # nack: back at once
        [again] = await pubsub.pull(10, 5.0)
        assert (again.message_id, again.delivery_attempt) == (message_id, 2)
        await pubsub.modify_ack_deadline([again.ack_id], 60, 2.0)
        await pubsub.acknowledge([again.ack_id], 2.0)
        sim.auth.expire_all()  # a 401 makes the client fetch a new token and retry once
        assert await pubsub.pull(10, 5.0) == []
        for path, expected in (("redelivered", [message_id]), ("expired", [])):
            async with session.get(f"{server.base_url}/control/{path}") as resp:
                assert await resp.json() == expected
        async with session.get(f"{server.base_url}/control/acked") as resp:
            [acked] = await resp.json()
        assert (acked["message_id"], acked["delivery_attempt"]) == (message_id, 2)
    stats = sim.stats()
    assert (stats["acked"], stats["nacked"], stats["deadline_extensions"]) == (1, 1, 1)
    assert stats["tokens_issued"] == 2


async def test_rate_limit_and_scope_errors_are_typed(
    server: PubsubSimulatorServer, tmp_path: Path
) -> None:
    server.simulator.config.rate_limit_qps = 1.0
    async with aiohttp.ClientSession() as session:
        pubsub = client(server, session, tmp_path / "sa.json")
        await pubsub.acknowledge(["x" * 30 + "-1"], 2.0)  # the one request the bucket holds
        with pytest.raises(VendorUnavailableError) as info:
            await pubsub.acknowledge(["x" * 30 + "-1"], 2.0)
        assert info.value.status == 429
        wrong_scope = client(
            server,
            session,
            tmp_path / "sa.json",
            scope="https://www.googleapis.com/auth/androidenterprise",
        )
        with pytest.raises(VendorAuthError, match="invalid_scope"):
            await wrong_scope.pull(1, 2.0)


async def test_simulator_speaks_pubsub_rest_and_google_errors(
    server: PubsubSimulatorServer, tmp_path: Path
) -> None:
    base = server.api_base_url
    sub = f"{base}/{server.subscription}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sub}:pull", json={"maxMessages": 1}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["status"] == "UNAUTHENTICATED"
        settings = amapi_settings(server, tmp_path / "sa.json")
        token = await TokenProvider(settings, http).get()
        auth = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{sub}:pull", json={"maxMessages": 0}, headers=auth) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"
        missing = f"{base}/projects/sim-project/subscriptions/nope:pull"
        async with http.post(missing, json={"maxMessages": 1}, headers=auth) as resp:
            assert resp.status == 404
        # A topic and a subscription created over REST; a publish reaches it.
        async with http.put(f"{base}/projects/sim-project/topics/t2", headers=auth) as resp:
            assert resp.status == 200
        body = {"topic": "projects/sim-project/topics/t2", "ackDeadlineSeconds": 5}
        async with http.put(
            f"{base}/projects/sim-project/subscriptions/s2", json=body, headers=auth
        ) as resp:
            assert resp.status == 400  # below Pub/Sub's 10 s minimum
        body["ackDeadlineSeconds"] = 20
        async with http.put(
            f"{base}/projects/sim-project/subscriptions/s2", json=body, headers=auth
        ) as resp:
            assert (await resp.json())["ackDeadlineSeconds"] == 20
        message = {"data": "e30=", "attributes": {"notificationType": "ENROLLMENT"}}
        async with http.post(
            f"{base}/projects/sim-project/topics/t2:publish",
            json={"messages": [message]},
            headers=auth,
        ) as resp:
            [message_id] = (await resp.json())["messageIds"]
        async with http.post(
            f"{base}/projects/sim-project/subscriptions/s2:pull",
            json={"maxMessages": 5},
            headers=auth,
        ) as resp:
            [got] = (await resp.json())["receivedMessages"]
        assert got["message"]["messageId"] == message_id
        assert got["message"]["data"] == "e30="
        assert got["deliveryAttempt"] == 1
