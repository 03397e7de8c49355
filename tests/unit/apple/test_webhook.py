"""Webhook decisions with a scripted publisher (no Kafka): one answer rule, never a 500.

Kafka itself is exercised in tests/integration/apple/test_webhook_kafka.py; here the publisher is
scripted to fail in each way the contract allows (PublishError, RecordRejectedError, a bug)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.apple.webhook import AppleWebhook
from broker.errors import PublishError, RecordRejectedError
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from tests.unit.apple.seeds import ASSET_COUNT, ASSOCIATE


class ScriptedPublisher:
    """Implements the two publisher calls the webhook makes; fails while ``failing`` is set;
    ``publish`` raises ``publish_raises`` when set."""

    def __init__(self) -> None:
        self.failing = False
        self.publish_raises: Exception | None = None
        self.published: list[CanonicalEvent] = []
        self.dead: list[tuple[bytes, str]] = []

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        if self.failing:
            raise PublishError("scripted failure")
        if self.publish_raises is not None:
            raise self.publish_raises
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
def metrics() -> BrokerMetrics:
    return BrokerMetrics()


@pytest.fixture
async def http(
    publisher: ScriptedPublisher, health: KafkaHealth, metrics: BrokerMetrics
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
        publisher,
        health,
        metrics,
        lambda tenant, event: seen.append(tenant),
    )
    app = web.Application()
    app.add_routes([hook.route()])
    async with TestClient(TestServer(app)) as client:
        yield client


async def _post(http: TestClient[Any, Any], body: Any) -> tuple[int, dict[str, str]]:
    status, headers, _ = await _answer(http, body)
    return status, headers


async def _answer(
    http: TestClient[Any, Any], body: Any
) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await http.post(
        "/apple/acme/notifications", data=data, headers={"Authorization": "Bearer tok"}
    )
    doc = orjson.loads(await resp.read())
    return resp.status, dict(resp.headers), doc


def _count(metrics: BrokerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


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
    status, _, doc = await _answer(http, b"{not json")
    assert (status, doc["status"], doc["reason"]) == (200, "dead_lettered", "malformed")
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


async def test_record_rejected_is_dead_lettered_and_answered_2xx(
    http: TestClient[Any, Any], publisher: ScriptedPublisher, health: KafkaHealth
) -> None:
    publisher.publish_raises = RecordRejectedError("too_large", "1.3 MB > 1 MiB")
    status, _, doc = await _answer(http, ASSOCIATE)
    assert (status, doc["status"], doc["reason"]) == (200, "dead_lettered", "too_large")
    assert publisher.dead == [(orjson.dumps(ASSOCIATE), "too_large")]
    assert health.healthy  # one record's fate is not the cluster's
    publisher.publish_raises = None
    assert (await _answer(http, ASSET_COUNT))[2]["status"] == "accepted"


async def test_unexpected_exception_is_dead_lettered_logged_and_counted_never_500(
    http: TestClient[Any, Any],
    publisher: ScriptedPublisher,
    metrics: BrokerMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher.publish_raises = ValueError("a bug")
    status, _, doc = await _answer(http, ASSET_COUNT)
    assert (status, doc["status"], doc["reason"]) == (200, "dead_lettered", "internal_error")
    assert publisher.dead == [(orjson.dumps(ASSET_COUNT), "internal_error")]
    assert _count(metrics, "mdm_broker_internal_errors_total", vendor="apple") == 1
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


async def test_unexpected_exception_while_kafka_fails_is_503(
    http: TestClient[Any, Any], publisher: ScriptedPublisher
) -> None:
    publisher.publish_raises = TypeError("a bug")
    original = publisher.dead_letter

    async def failing_dead_letter(payload: bytes, **kw: Any) -> None:
        raise PublishError("down")

    publisher.dead_letter = failing_dead_letter  # type: ignore[method-assign]
    assert (await _post(http, ASSET_COUNT))[0] == 503
    publisher.dead_letter = original  # type: ignore[method-assign]


@pytest.mark.parametrize("depth", [33, 260, 600, 1000, 20_000])
async def test_deep_nesting_is_dead_lettered_with_2xx(
    http: TestClient[Any, Any], publisher: ScriptedPublisher, depth: int
) -> None:
    body = (
        b'{"notificationId":"deep","notificationType":"X","uId":"1","notification":'
        + b'{"a":' * (depth - 1)
        + b"1"
        + b"}" * depth
    )
    status, _, doc = await _answer(http, body)
    assert (status, doc["status"]) == (200, "dead_lettered")
    assert doc["reason"] == ("malformed" if depth > 1024 else "too_deep")
    assert publisher.published == []
    assert publisher.dead == [(body, doc["reason"])]


async def test_schema_violation_is_dead_lettered_with_2xx(
    http: TestClient[Any, Any], publisher: ScriptedPublisher
) -> None:
    status, _, doc = await _answer(http, {**ASSET_COUNT, "uId": 2049025000431439})
    assert (status, doc["status"], doc["reason"]) == (200, "dead_lettered", "schema")
    assert "uId" in doc["detail"]


async def test_id_reused_with_other_content_is_published_under_a_derived_id(
    http: TestClient[Any, Any], publisher: ScriptedPublisher, metrics: BrokerMetrics
) -> None:
    changed = {**ASSET_COUNT, "notification": {**ASSET_COUNT["notification"], "countDelta": 50}}
    first = await _answer(http, ASSET_COUNT)
    second = await _answer(http, changed)
    again = await _answer(http, changed)
    nid = ASSET_COUNT["notificationId"]
    derived = f"{nid}~{hashlib.sha256(orjson.dumps(changed)).hexdigest()[:16]}"
    assert [a[2]["status"] for a in (first, second, again)] == ["accepted", "accepted", "duplicate"]
    assert second[2] == {
        "status": "accepted",
        "reason": "id_collision",
        "id": derived,
        "type": "mdm.asset.count_changed",
    }
    assert [(e.id, e.idcollision) for e in publisher.published] == [(nid, None), (derived, nid)]
    assert _count(metrics, "mdm_broker_id_collisions_total", vendor="apple") == 1


async def test_ids_beyond_their_limit_are_dead_lettered_and_never_remembered(
    http: TestClient[Any, Any], publisher: ScriptedPublisher
) -> None:
    """Issue 10: 200 ids of 400 KB kept 85 MB resident. Ids are now limited (128 characters for
    notificationId), so such input is dead-lettered and the window holds nothing of it."""
    for i in range(5):
        status, _, doc = await _answer(http, {**ASSET_COUNT, "notificationId": f"{i}" * 400_000})
        assert (status, doc["status"], doc["reason"]) == (200, "dead_lettered", "schema")
    assert publisher.published == []
    assert len(publisher.dead) == 5


async def _chunks(data: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_body_read_with_and_without_content_length_up_to_the_limit(
    publisher: ScriptedPublisher, health: KafkaHealth, metrics: BrokerMetrics
) -> None:
    """An announced length is read at once (refused unread when over the limit); a chunked
    body (no Content-Length) is read until the limit; both give the same answers."""
    short = len(orjson.dumps({**ASSOCIATE, "padding": ""}))
    body = orjson.dumps({**ASSOCIATE, "padding": "x" * (1024 - short)})  # the smallest limit
    settings = AppleSettings(
        enabled=True,
        tenants={"acme": AppleTenantSettings(notification_auth_tokens=[SecretStr("tok")])},
        max_body_bytes=len(body),
        dedupe_window=0,
    )
    app = web.Application()
    app.add_routes([AppleWebhook(settings, publisher, health, metrics).route()])
    url, auth = "/apple/acme/notifications", {"Authorization": "Bearer tok"}
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(url, data=body, headers=auth)
        assert resp.status == 200
        assert resp.request_info.headers["Content-Length"] == str(len(body))
        resp = await client.post(url, data=_chunks(body), headers=auth)
        assert resp.status == 200
        assert "Content-Length" not in resp.request_info.headers
        assert (await client.post(url, data=body + b" ", headers=auth)).status == 413
        assert (await client.post(url, data=_chunks(body + b" "), headers=auth)).status == 413
    assert [e.raw_json for e in publisher.published] == [body, body]


async def test_an_empty_body_is_dead_lettered_not_a_500(
    publisher: ScriptedPublisher, health: KafkaHealth, metrics: BrokerMetrics
) -> None:
    """Content-Length: 0 with a valid token (found by `make fuzz`): a malformed dead letter."""
    settings = AppleSettings(
        enabled=True,
        tenants={"acme": AppleTenantSettings(notification_auth_tokens=[SecretStr("tok")])},
    )
    app = web.Application()
    app.add_routes([AppleWebhook(settings, publisher, health, metrics).route()])
    url, auth = "/apple/acme/notifications", {"Authorization": "Bearer tok"}
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(url, data=b"", headers=auth)
        assert resp.request_info.headers["Content-Length"] == "0"
        doc = await resp.json()
        assert (resp.status, doc["status"], doc["reason"]) == (200, "dead_lettered", "malformed")
    assert publisher.published == []
    assert publisher.dead == [(b"", "malformed")]
