"""Webhook decisions with a scripted publisher (no Kafka): ack only after publish returned."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.apple.webhook import AppleWebhook
from broker.errors import PublishError
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from tests.unit.apple.seeds import ASSET_COUNT, ASSOCIATE


class ScriptedPublisher:
    """Implements the two publisher calls the webhook makes; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False
        self.published: list[CanonicalEvent] = []
        self.dead: list[tuple[bytes, str]] = []

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        if self.failing:
            raise PublishError("scripted failure")
        self.published.extend(events)

    async def dead_letter(self, payload: bytes, *, reason: str, **_: Any) -> None:
        if self.failing:
            raise PublishError("scripted failure")
        self.dead.append((payload, reason))


@pytest.fixture
def publisher() -> ScriptedPublisher:
    return ScriptedPublisher()


@pytest.fixture
def health() -> KafkaHealth:
    return KafkaHealth()


@pytest.fixture
async def http(
    publisher: ScriptedPublisher, health: KafkaHealth
) -> AsyncIterator[TestClient[Any, Any]]:
    settings = AppleSettings(
        enabled=True,
        tenants={"acme": AppleTenantSettings(notification_auth_tokens=[SecretStr("tok")])},
        retry_after_s=7,
        dedupe_window=100,
    )
    seen: list[str] = []
    hook = AppleWebhook(
        settings,
        cast(KafkaPublisher, publisher),
        health,
        BrokerMetrics(),
        lambda tenant, event: seen.append(tenant),
    )
    app = web.Application()
    app.add_routes([hook.route()])
    async with TestClient(TestServer(app)) as client:
        yield client


async def _post(http: TestClient[Any, Any], body: Any) -> tuple[int, dict[str, str]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await http.post(
        "/apple/acme/notifications", data=data, headers={"Authorization": "Bearer tok"}
    )
    await resp.read()
    return resp.status, dict(resp.headers)


async def test_publish_failure_is_503_with_retry_after_and_no_ack(
    http: TestClient[Any, Any], publisher: ScriptedPublisher
) -> None:
    publisher.failing = True
    status, headers = await _post(http, ASSET_COUNT)
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert publisher.published == []
    publisher.failing = False
    assert (await _post(http, ASSET_COUNT))[0] == 200  # Apple's retry
    assert [e.id for e in publisher.published] == [ASSET_COUNT["notificationId"]]


async def test_dead_letter_failure_is_503_so_apple_retries(
    http: TestClient[Any, Any], publisher: ScriptedPublisher
) -> None:
    publisher.failing = True
    assert (await _post(http, b"{not json"))[0] == 503
    publisher.failing = False
    assert (await _post(http, b"{not json"))[0] == 400
    assert publisher.dead == [(b"{not json", "malformed")]


async def test_unhealthy_kafka_fails_fast(
    http: TestClient[Any, Any], publisher: ScriptedPublisher, health: KafkaHealth
) -> None:
    health.mark_failed("test")
    status, headers = await _post(http, ASSOCIATE)
    assert status == 503
    assert "Retry-After" in headers
    health.mark_healthy()
    assert (await _post(http, ASSOCIATE))[0] == 200


async def test_recent_duplicate_is_acked_without_a_second_write(
    http: TestClient[Any, Any], publisher: ScriptedPublisher
) -> None:
    assert (await _post(http, ASSET_COUNT))[0] == 200
    assert (await _post(http, ASSET_COUNT))[0] == 200
    assert len(publisher.published) == 1
