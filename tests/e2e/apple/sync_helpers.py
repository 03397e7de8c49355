"""Pieces shared by the Apple sync end-to-end tests (simulator -> broker -> real Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from adapters.apple.settings import AppleSettings, AppleSyncSettings
from adapters.apple.syncrun import SyncReport
from broker.app.runtime import BrokerApp
from broker.events import CanonicalEvent, EventType, decode_event
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import TENANT, apple_adapter, apple_settings, control
from tests.integration.kapua.helpers import read_topic_raw

SYNCED = {EventType.ASSIGNMENT_SYNCED, EventType.USER_SYNCED, EventType.ASSET_COUNTS_SYNCED}


async def read_all(bootstrap: str, topic: str) -> list[CanonicalEvent]:
    """Every event of ``topic`` up to its end offsets at call time."""
    raw = await read_topic_raw(bootstrap, topic)
    return [decode_event(v or b"") for _, _, _, v in sorted(raw, key=lambda r: (r[0], r[1]))]


def sync_apple_settings(sim: AppleSimulator, **sync: Any) -> AppleSettings:
    """Apple settings with horizons shortened to about a second (Apple's are minutes)."""
    values: dict[str, Any] = {
        "retry_horizon_s": 1.0,
        "heartbeat_s": 0.5,
        "safety_net_interval_s": 0.0,
        "retry_s": 0.5,
        "session_timeout_s": 6.0,
        "heartbeat_interval_s": 1.0,
    }
    values.update(sync)
    return apple_settings(sim, sync=AppleSyncSettings(**values))


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out waiting for: {what}")


async def wait_owned(app: BrokerApp, tenant: str = TENANT, timeout_s: float = 60.0) -> None:
    scheduler = apple_adapter(app).sync

    async def owned() -> bool:
        return tenant in scheduler.records

    await eventually(owned, timeout_s, f"owning {tenant}")


async def wait_sync(app: BrokerApp, *reasons: str, timeout_s: float = 60.0) -> SyncReport:
    """The first completed sync with one of ``reasons`` on ``app``."""
    scheduler = apple_adapter(app).sync

    async def done() -> bool:
        return any(r.reason in reasons for r in scheduler.reports)

    await eventually(done, timeout_s, f"a {'/'.join(reasons)} sync")
    return next(r for r in scheduler.reports if r.reason in reasons)


async def create_users(sim: AppleSimulator, count: int, prefix: str = "user") -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    async with AppleApiClient(apple_settings(sim), SecretStr(sim.default.s_token)) as client:
        await client.manage_users(
            "create", [{"clientUserId": u, "email": f"{u}@example.com"} for u in ids]
        )
    return ids


async def perform_changes(sim: AppleSimulator, users: list[str]) -> dict[str, Any]:
    """200 assignments, the users' invitations accepted, 5 purchases; returns what was done."""
    bulk = await control(
        sim, "POST", "/_sim/bulk-associate", {"assets": 2, "devices": 100}, expect=202
    )
    for user in users:
        await control(sim, "POST", f"/_sim/users/{user}/accept", {}, expect=202)
    bought = [f"55500{i}" for i in range(5)]
    for adam_id in bought:
        await control(sim, "POST", "/_sim/assets", {"adamId": adam_id, "count": 10}, expect=202)
    pairs = {(a["adamId"], s) for a in bulk["assets"] for s in bulk["serialNumbers"]}
    return {"assignments": pairs, "users": set(users), "assets": set(bought)}


def check_synced(events: list[CanonicalEvent], sim: AppleSimulator, done: dict[str, Any]) -> None:
    """Every change of ``done`` is in ``events`` as a synced event with the simulator's state."""
    synced = [e for e in events if e.type in SYNCED]
    pairs = {
        (e.data["adam_id"], e.data["serial_number"])
        for e in synced
        if e.type is EventType.ASSIGNMENT_SYNCED
    }
    assert done["assignments"] <= pairs, len(done["assignments"] - pairs)
    users = {
        e.data["client_user_id"]: e.data["status"]
        for e in synced
        if e.type is EventType.USER_SYNCED
    }
    assert {u: users.get(u) for u in done["users"]} == dict.fromkeys(done["users"], "Associated")
    counts: dict[str, int] = {}
    for e in synced:
        if e.type is EventType.ASSET_COUNTS_SYNCED:
            counts[e.data["adam_id"]] = e.data["total_count"]
    location = sim.default
    for adam_id in done["assets"]:
        assert counts.get(adam_id) == location.assets[(adam_id, "STDQ")].total, adam_id
    for e in synced:
        assert e.source == f"/apple/locations/{location.uid}"
        assert e.data["sync"]["started"]
        assert "raw" in e.data
        e.typed_data()


__all__ = ["SYNCED", "TENANT"]
