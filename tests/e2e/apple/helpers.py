"""Shared pieces of the Apple end-to-end tests: simulator, broker, Kafka read-back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from adapters.apple.adapter import AppleAdapter
from adapters.apple.client import AppleApiClient
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.events import CanonicalEvent, decode_event
from simulators.apple.server import AppleSimulator

TENANT = "acme"
TOKEN = "notif-token-current"
OLD_TOKEN = "notif-token-previous"
TRACKING_TOKEN = "tracking-token"

Record: TypeAlias = ConsumerRecord  # aiokafka is untyped: ConsumerRecord[bytes, bytes]


def apple_settings(sim: AppleSimulator, **overrides: Any) -> AppleSettings:
    """Adapter settings pointing at ``sim`` with short timings for tests."""
    tenant = AppleTenantSettings(
        notification_auth_tokens=[SecretStr(TOKEN), SecretStr(OLD_TOKEN)],
        expected_uid=sim.default.uid,
        s_token=SecretStr(sim.default.s_token),
    )
    values: dict[str, Any] = {
        "enabled": True,
        "tenants": {TENANT: tenant},
        "api_base_url": sim.api_url,
        "tracking_tokens": [SecretStr(TRACKING_TOKEN)],
        "reconcile_after_s": 1.0,
        "status_poll_interval_s": 0.5,
        "api_backoff_s": 0.2,
        "api_timeout_s": 10.0,
    }
    values.update(overrides)
    return AppleSettings(**values)


def webhook_settings(
    tenants: dict[str, str | None] | None = None, **overrides: Any
) -> AppleSettings:
    """Webhook-only adapter settings (no Apple API, no reconciliation): tenant name -> expected
    uId, every tenant accepting ``TOKEN``."""
    wanted = tenants if tenants is not None else {TENANT: None}
    values: dict[str, Any] = {
        "enabled": True,
        "tenants": {
            name: AppleTenantSettings(
                notification_auth_tokens=[SecretStr(TOKEN)], expected_uid=expected_uid
            )
            for name, expected_uid in wanted.items()
        },
        "reconcile_enabled": False,
    }
    values.update(overrides)
    return AppleSettings(**values)


@asynccontextmanager
async def running_broker(
    base: BrokerSettings, apple: AppleSettings, port: int = 0
) -> AsyncIterator[BrokerApp]:
    """A BrokerApp with only the Apple adapter, on 127.0.0.1:``port`` (0 = free port)."""
    settings = BrokerSettings(
        kafka=base.kafka, http={"host": "127.0.0.1", "port": port}, apple=apple
    )
    app = BrokerApp(settings, factories=factories(settings, ["apple"]))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def notification_url(app: BrokerApp, tenant: str = TENANT) -> str:
    return f"{app.base_url}/apple/{tenant}/notifications"


async def subscribe(sim: AppleSimulator, app: BrokerApp) -> dict[str, Any]:
    """Register the broker with the simulator (TEST_NOTIFICATION is delivered during the call)."""
    async with AppleApiClient(apple_settings(sim), SecretStr(sim.default.s_token)) as client:
        return await client.set_client_config(
            notification_types=[
                "ASSET_MANAGEMENT",
                "USER_MANAGEMENT",
                "USER_ASSOCIATED",
                "ASSET_COUNT",
            ],
            notification_url=notification_url(app),
            notification_auth_token=SecretStr(TOKEN),
        )


async def control(
    sim: AppleSimulator, method: str, path: str, body: Any = None, expect: int | None = None
) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sim.base_url + path, json=body) as resp,
    ):
        doc = await resp.json()
        if expect is not None:
            assert resp.status == expect, doc
        return doc


async def wait_idle(sim: AppleSimulator, timeout_s: float = 60.0) -> None:
    doc = await control(sim, "POST", f"/_sim/wait-idle?timeout_s={timeout_s}")
    assert doc["idle"], doc


async def track(
    app: BrokerApp, event_ids: list[str], tenant: str = TENANT
) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{app.base_url}/apple/{tenant}/tracked-events",
            json={"eventIds": event_ids},
            headers={"Authorization": f"Bearer {TRACKING_TOKEN}"},
        ) as resp,
    ):
        await resp.read()
        return resp


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    timeout_s: float = 60.0,
) -> list[Record]:
    """Read ``topic`` from the start until ``done(records)`` or ``timeout_s``; returns the records."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"apple-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done(records) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def events_of(records: list[Record]) -> list[CanonicalEvent]:
    return [decode_event(r.value) for r in records]


def has_id(event_id: str) -> Callable[[list[Record]], bool]:
    def done(records: list[Record]) -> bool:
        return any(decode_event(r.value).id == event_id for r in records)

    return done


def dedupe(events: list[CanonicalEvent]) -> dict[tuple[str, str], CanonicalEvent]:
    """What an idempotent consumer keeps: the first event per (source, id)."""
    kept: dict[tuple[str, str], CanonicalEvent] = {}
    for event in events:
        kept.setdefault(event.idempotency_key, event)
    return kept


def sample(app: BrokerApp, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def apple_adapter(app: BrokerApp) -> AppleAdapter:
    (adapter,) = [a for a in app.adapters if isinstance(a, AppleAdapter)]
    return adapter
