"""Two `mdm-broker run` instances share 20 Apple locations through the sync consumer group; one is
SIGKILLed mid-sync: the survivor completes every location, each exactly once, and no location is
ever read by both instances at once."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.apple.syncstate import SYNC_PREFIX, LocationRecord
from broker.devtools.devkafka import free_port
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig
from tests.integration.kapua.helpers import BrokerProcess, eventually, read_topic_raw

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LOCATIONS = 20
UA = "mdm-notification-broker/"


def _lit(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(path: Path, kafka: KafkaSettings, sim: AppleSimulator, name: str, port: int) -> Path:
    lines = ["[kafka]"]
    for key in ("bootstrap_servers", "events_topic", "dlq_topic", "state_topic"):
        lines.append(f"{key} = {_lit(getattr(kafka, key))}")
    lines += [
        "publish_timeout_s = 10.0",
        f"[http]\nport = {port}",
        '[log]\nlevel = "INFO"',
        "[apple]",
        "enabled = true",
        f"api_base_url = {_lit(sim.api_url)}",
        "api_backoff_s = 0.2",
        "reconcile_enabled = false",
        "[apple.sync]",
        f"instance_id = {_lit(name)}",
        "retry_horizon_s = 1.0",
        "heartbeat_s = 30.0",  # > session timeout: a handover between live instances is no gap
        "safety_net_interval_s = 0",
        "session_timeout_s = 6.0",
        "heartbeat_interval_s = 1.0",
        "max_concurrent_locations = 3",
        "retry_s = 1.0",
    ]
    for i, location in enumerate(sim.locations.values()):
        lines += [
            f"[apple.tenants.loc{i:02d}]",
            'notification_auth_tokens = ["hook-token"]',
            f"expected_uid = {_lit(location.uid)}",
            f"s_token = {_lit(location.s_token)}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _history(raw: list[tuple[int, int, bytes | None, bytes | None]]) -> dict[str, list[Any]]:
    """Every value written to each location record, in write order."""
    out: dict[str, list[Any]] = defaultdict(list)
    for _, _, key, value in sorted(raw, key=lambda r: (r[0], r[1])):
        name = (key or b"").decode()
        if name.startswith(SYNC_PREFIX) and value is not None:
            out[name[len(SYNC_PREFIX) :]].append(orjson.loads(value))
    return out


def _populate(sim: AppleSimulator) -> None:
    """120 assignments per location (12 pages of 10: a sync takes about a second)."""
    for n, location in enumerate(sim.locations.values()):
        for a in range(2):
            adam_id = f"7{n:02d}{a}"
            location.buy(adam_id, "STDQ", 60)
            asset = location.assets[(adam_id, "STDQ")]
            for d in range(60):
                key = (adam_id, "STDQ", "serialNumber", f"S{n}-{a}-{d}")
                location.assignments[key] = location.bump()
                asset.assigned += 1


async def _records(kafka: KafkaSettings) -> dict[str, list[Any]]:
    return _history(await read_topic_raw(kafka.bootstrap_servers, kafka.state_topic))


def _all_synced_since(history: dict[str, list[Any]], since: float) -> bool:
    last = {t: LocationRecord.from_value(v[-1]) for t, v in history.items()}
    return len(last) == LOCATIONS and all(
        r is not None and r.run is None and (r.synced_through or 0) > since for r in last.values()
    )


async def _open_gaps(brokers: list[BrokerProcess]) -> None:
    """A 401 answer (wrong token) for every tenant opens a gap, as a botched rotation would."""
    async with aiohttp.ClientSession() as http:
        for i in range(LOCATIONS):
            broker = brokers[i % len(brokers)]
            url = f"http://127.0.0.1:{broker.port}/apple/loc{i:02d}/notifications"
            headers = {"Authorization": "Bearer not-the-token"}
            async with http.post(url, data=b"{}", headers=headers) as response:
                assert response.status == 401


async def test_sigkill_mid_sync_survivor_completes_each_location_once(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # Slow syncs on purpose: 10 records a page, 15 requests/s per location.
    sim = AppleSimulator(SimConfig(page_size=10), Faults(retry_window_s=1.0), seed=11)
    for i in range(LOCATIONS - 1):
        sim.add_location(uid=str(3_000_000_000_000_000 + i))
    await sim.start()
    await create_topics(kafka_settings)
    brokers: dict[str, BrokerProcess] = {}
    try:
        for name in ("alpha", "beta"):
            port = free_port()
            config = _config(tmp_path / f"{name}.toml", kafka_settings, sim, name, port)
            brokers[name] = BrokerProcess(config, tmp_path / f"{name}.log", port)
            await brokers[name].start()
        alpha, beta = brokers["alpha"], brokers["beta"]
        owned = "mdm_broker_apple_sync_owned_locations"

        async def split() -> bool:
            a, b = await alpha.value(owned), await beta.value(owned)
            return a > 0 and b > 0 and a + b == LOCATIONS

        await eventually(split, 90, "both instances own locations")

        async def initial_done() -> bool:
            return _all_synced_since(await _records(kafka_settings), 0.0)

        await eventually(initial_done, 90, "every location's initial sync", 0.5)
        _populate(sim)
        triggered = time.time()
        await _open_gaps([alpha, beta])

        async def beta_mid_sync() -> bool:
            return any(c.user_agent == UA + "beta" and c.at > triggered for c in sim.api_calls)

        await eventually(beta_mid_sync, 60, "beta syncing after the gaps", 0.05)
        await beta.kill()
        killed_at = time.time()

        async def all_done() -> bool:
            return _all_synced_since(await _records(kafka_settings), triggered)

        await eventually(all_done, 120, "every location synced after the gaps", 1.0)
    finally:
        for process in brokers.values():
            await process.kill()
        await sim.stop()
    history = await _records(kafka_settings)

    # Each location completed exactly one sync after the gaps (one synced_through value).
    completions = {
        tenant: {
            v["synced_through"]
            for v in values
            if v["run"] is None and (v["synced_through"] or 0) > triggered
        }
        for tenant, values in history.items()
    }
    assert all(len(c) == 1 for c in completions.values()), completions
    # No location was read by both instances at once: after the gaps, every request of one
    # instance precedes every request of the other, and only beta's work moved (to alpha).
    by_location: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for call in sim.api_calls:
        if call.at > triggered:
            by_location[call.uid].append((call.at, call.user_agent))
    assert len(by_location) == LOCATIONS
    interrupted = []
    for uid, calls in by_location.items():
        agents = [agent for _, agent in sorted(calls)]
        switches = sum(1 for a, b in itertools.pairwise(agents) if a != b)
        assert switches <= 1, (uid, agents)
        if switches == 1:
            assert agents[0] == UA + "beta", (uid, agents)
            assert max(at for at, a in calls if a == UA + "beta") <= killed_at
            interrupted.append(uid)
    assert interrupted, "the kill interrupted no sync: the test proves nothing"
    # Locations that beta had not finished were completed by the survivor, which resumed beta's
    # stored run (same start, data sets beta finished not read again) instead of starting anew.
    tenant_of = {loc.uid: f"loc{i:02d}" for i, loc in enumerate(sim.locations.values())}
    for uid in interrupted:
        values = history[tenant_of[uid]]
        runs = [v["run"] for v in values if v["owner"] == "beta" and v["run"] is not None]
        assert runs, uid
        assert values[-1]["owner"] == "alpha"
        assert values[-1]["synced_through"] == runs[-1]["started"], uid
    for values in history.values():
        if values[-1]["owner"] == "beta":
            assert values[-1]["run"] is None
