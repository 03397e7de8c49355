"""The webhook's answer rule against a real Kafka: poison input is dead-lettered and answered 2xx,
``data.raw`` is the posted bytes, and one oversized notification harms nobody else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from broker.app.config import BrokerSettings
from broker.app.runtime import BrokerApp
from tests.e2e.apple.helpers import (
    TOKEN,
    events_of,
    has_id,
    notification_url,
    read_until,
    running_broker,
    webhook_settings,
)

pytestmark = pytest.mark.kafka

UID = "2049025000431439"
OTHER_UID = "2049025000999999"


class Poster:
    """POSTs bodies to the broker's webhook with the tenant token; returns (status, answer)."""

    def __init__(self, app: BrokerApp, session: aiohttp.ClientSession) -> None:
        self._app = app
        self._session = session

    async def __call__(self, body: bytes, tenant: str = "acme") -> tuple[int, dict[str, Any]]:
        async with self._session.post(
            notification_url(self._app, tenant),
            data=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as resp:
            return resp.status, orjson.loads(await resp.read())


@asynccontextmanager
async def broker_and_poster(
    base: BrokerSettings, **apple: Any
) -> AsyncIterator[tuple[BrokerApp, Poster]]:
    settings = webhook_settings({"acme": UID, "other": OTHER_UID}, **apple)
    async with running_broker(base, settings) as app, aiohttp.ClientSession() as session:
        yield app, Poster(app, session)


def nested(depth: int) -> bytes:
    """An authenticated-looking notification whose body nests ``depth`` levels in total."""
    return (
        b'{"notificationId":"deep-%d","notificationType":"ASSET_COUNT","uId":"%s","notification":'
        % (depth, UID.encode())
        + b'{"a":' * (depth - 1)
        + b"1"
        + b"}" * depth
    )


def asset_count(notification_id: str, uid: str = UID, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "notification": {"adamId": "408709785", "countDelta": 1, "pricingParam": "STDQ"},
            "notificationId": notification_id,
            "notificationType": "ASSET_COUNT",
            "uId": uid,
            **extra,
        }
    )


async def test_nesting_is_dead_lettered_and_big_numbers_reach_kafka_exactly(
    broker_settings: BrokerSettings,
) -> None:
    exact = (
        b'{"notification": {"adamId": "408709785", "countDelta": -12, "pricingParam": "STDQ",'
        b' "licenceCounter": 18446744073709551616, "price": 1.10},\n'
        b'  "notificationId": "exact-1", "notificationType": "ASSET_COUNT", "uId": "' + UID.encode()
        + b'"}'
    )  # fmt: skip
    async with broker_and_poster(broker_settings) as (app, post):
        answers = {depth: await post(nested(depth)) for depth in (260, 600, 1000, 20_000)}
        exact_answer = await post(exact)
        assert (await post(asset_count("marker-1")))[0] == 200
        kafka = app.settings.kafka
        records = await read_until(kafka.bootstrap_servers, kafka.events_topic, has_id("marker-1"))
        dlq = await read_until(kafka.bootstrap_servers, kafka.dlq_topic, lambda r: len(r) >= 4)

    for depth, (status, answer) in answers.items():
        assert status == 200, depth
        assert answer["status"] == "dead_lettered", depth
        assert answer["reason"] == ("malformed" if depth > 1024 else "too_deep"), depth
    assert sorted(r.value for r in dlq) == sorted(nested(d) for d in answers)

    # data.raw in the record is the posted bytes: 2**64 and 1.10 exactly as sent.
    assert exact_answer[0] == 200
    assert exact_answer[1]["status"] == "accepted", exact_answer
    (record,) = [r for r in records if b'"exact-1"' in r.value]
    assert exact in record.value
    assert b"18446744073709551616" in record.value
    assert b"1.10" in record.value
    assert [e.id for e in events_of(records)] == ["exact-1", "marker-1"]


def assignments_notification(count: int) -> bytes:
    assignments = [
        {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": f"SN{i:08d}"}
        for i in range(count)
    ]
    return orjson.dumps(
        {
            "notification": {
                "assignments": assignments,
                "eventId": "87cbc650-16cc-4f9e-a833-e622f377a9f7",
                "result": "SUCCESS",
                "type": "ASSOCIATE",
            },
            "notificationId": "huge-1",
            "notificationType": "ASSET_MANAGEMENT",
            "uId": UID,
        }
    )


async def test_oversized_notification_is_dead_lettered_and_nobody_else_is_harmed(
    broker_settings: BrokerSettings,
) -> None:
    huge = assignments_notification(9000)
    assert 600_000 < len(huge) < 1_048_576  # under the webhook body limit (1 MiB)
    async with broker_and_poster(broker_settings) as (app, post):
        status, answer = await post(huge)
        after = [
            await post(asset_count(f"after-{i}", UID if i % 2 else OTHER_UID), "acme" if i % 2 else "other")
            for i in range(100)
        ]  # fmt: skip
        kafka = app.settings.kafka
        records = await read_until(
            kafka.bootstrap_servers, kafka.events_topic, lambda r: len(r) >= 100
        )
        dlq = await read_until(kafka.bootstrap_servers, kafka.dlq_topic, lambda r: len(r) >= 1)
        healthy = app.health.healthy

    assert status == 200
    assert answer["status"] == "dead_lettered"
    assert [s for s, _ in after] == [200] * 100
    assert {a["status"] for _, a in after} == {"accepted"}
    ids: list[str] = [e.id for e in events_of(records)]
    assert sorted(ids) == sorted(f"after-{i}" for i in range(100))
    sources = {e.source for e in events_of(records)}
    assert sources == {f"/apple/locations/{UID}", f"/apple/locations/{OTHER_UID}"}
    (dead,) = dlq
    assert dict(dead.headers)["dlq-reason"] == answer["reason"].encode()
    assert healthy
