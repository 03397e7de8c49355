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
