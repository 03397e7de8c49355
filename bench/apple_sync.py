"""Request cost of Apple syncs (simulator -> broker -> real Kafka).

``python -m bench.apple_sync [--out bench/results/apple_sync_cost.json]``

One location holding ``assignments`` assignments, ``users`` users and ``assets`` assets, Apple's
page size (1000 records). Measured with the broker's own Apple adapter:

* ``initial``: the first sync of the location (every record read whole);
* ``safety_net_unchanged``: a safety-net sync right after, nothing changed (the issue's bar:
  <= 3 requests);
* ``safety_net_unchanged_limits_expired``: the same once the process-wide service-config cache
  has expired (as 6 h later): 3 location requests plus the one unauthenticated ``/service/config``
  refresh that the whole process (every location) shares;
* ``safety_net_changed``: a safety-net sync after 50 new assignments and 5 accepted invitations;
* ``version_reset``: a sync after Apple forgot every ``versionId`` (9721 -> whole reads).

Each row: HTTP requests the sync sent to the location (its endpoints, the sToken's rate budget;
counted by the client and checked against the simulator's log), ``service_config_requests``
(global, unauthenticated, cached for ``service_config_refresh_s`` and shared by every location),
records read, events published, new event ids (not published by an earlier sync), wall time.
Time figures are noisy on shared machines; request counts are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adapters.apple.adapter import AppleAdapter
from adapters.apple.settings import AppleSettings, AppleSyncSettings, AppleTenantSettings
from adapters.apple.syncrun import SyncReport
from bench.run import kafka
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig
from simulators.apple.world import User

TENANT = "bench"


def _populate(sim: AppleSimulator, assignments: int, users: int, assets: int) -> None:
    location = sim.default
    per_asset = max(1, assignments // assets)
    for a in range(assets):
        adam_id = f"9{a:05d}"
        location.buy(adam_id, "STDQ", per_asset + 100)
        asset = location.assets[(adam_id, "STDQ")]
        for d in range(per_asset):
            location.assignments[(adam_id, "STDQ", "serialNumber", f"B{a}-{d}")] = location.bump()
            asset.assigned += 1
    for u in range(users):
        cuid = f"bench-user-{u}"
        location.users[cuid] = User(cuid, f"{cuid}@example.com", invite_code=f"code{u}")
        location.users[cuid].version = location.bump()


def _row(report: SyncReport, seen: set[str], calls: int) -> dict[str, Any]:
    new = set(report.events) - seen
    seen.update(report.events)
    return {
        "requests": report.requests,
        "service_config_requests": report.service_config_requests,
        "requests_seen_by_simulator": calls,
        "records": report.records,
        "records_total": sum(report.records.values()),
        "events": len(report.events),
        "new_event_ids": len(new),
        "full_reads": report.full_reads,
        "seconds": round(report.duration_s, 3),
    }


async def measure(bootstrap: str, assignments: int, users: int, assets: int) -> dict[str, Any]:
    prefix = f"bench-sync-{os.getpid()}"
    kafka_settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        dlq_topic=f"{prefix}.dlq",
        state_topic=f"{prefix}.state",
        partitions=3,
    )
    await create_topics(kafka_settings)
    sim = AppleSimulator(SimConfig(), Faults(retry_window_s=1.0))
    sim.config.limits["maxRequestPerSecond"] = 50
    _populate(sim, assignments, users, assets)
    await sim.start()
    apple = AppleSettings(
        enabled=True,
        api_base_url=sim.api_url,
        reconcile_enabled=False,
        tenants={
            TENANT: AppleTenantSettings(
                notification_auth_tokens=[SecretStr("bench-token")],
                expected_uid=sim.default.uid,
                s_token=SecretStr(sim.default.s_token),
            )
        },
        sync=AppleSyncSettings(initial_sync=False, safety_net_interval_s=0),
    )
    settings = BrokerSettings(
        kafka=kafka_settings, http={"host": "127.0.0.1", "port": 0}, apple=apple
    )
    app = BrokerApp(settings, CollectorRegistry(), factories(settings, ["apple"]))
    await app.start()
    results: dict[str, Any] = {}
    try:
        (adapter,) = [a for a in app.adapters if isinstance(a, AppleAdapter)]
        scheduler = adapter.sync
        for _ in range(1200):  # bounded: 120 s for the group to assign the partitions
            if TENANT in scheduler.records:
                break
            await asyncio.sleep(0.1)
        seen: set[str] = set()

        async def run(reason: str) -> dict[str, Any]:
            before = len(sim.api_calls)
            report = await scheduler.sync_now(TENANT, reason)
            return _row(report, seen, len(sim.api_calls) - before)

        results["initial"] = await run("initial")
        results["safety_net_unchanged"] = await run("safety_net")
        adapter.service_config.expire()  # as 6 h later: the shared limits cache has expired
        results["safety_net_unchanged_limits_expired"] = await run("safety_net")
        location = sim.default
        for d in range(50):
            key = ("900000", "STDQ", "serialNumber", f"NEW-{d}")
            location.assignments[key] = location.bump()
        for u in range(5):
            location.accept_invitation(f"bench-user-{u}")
        results["safety_net_changed"] = await run("safety_net")
        location.version_ids.clear()
        results["version_reset"] = await run("manual")
        client = adapter.client(TENANT)
        results["service_config_requests"] = (
            client.requests.get("service_config", 0) if client else 0
        )
    finally:
        await app.stop()
        await sim.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apple_sync", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/apple_sync_cost.json"))
    parser.add_argument("--assignments", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--assets", type=int, default=25)
    args = parser.parse_args(argv)
    doc: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "location": {"assignments": args.assignments, "users": args.users, "assets": args.assets},
        "page_size": SimConfig().page_size,
    }
    with kafka() as bootstrap:
        doc["syncs"] = asyncio.run(measure(bootstrap, args.assignments, args.users, args.assets))
    unchanged = doc["syncs"]["safety_net_unchanged"]
    doc["bar"] = {"safety_net_unchanged_requests_max": 3, "ok": unchanged["requests"] <= 3}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(orjson.dumps(doc["syncs"], option=orjson.OPT_INDENT_2).decode())
    print(f"wrote {args.out}")
    return 0 if doc["bar"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
