"""Two Kapua instances, discovery on both, the state topic compacted for real while they work,
then a clean handover: no cursor ever regresses and no row is published twice.

Compaction is forced on the real Kafka (``segment.ms`` tiny, ``min.cleanable.dirty.ratio`` low,
the cleaner's backoff shortened) and the test waits until the state topic shows offset gaps, the
mark of records removed by the cleaner, before it hands over.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from adapters.kapua.cursors import parse_record_key
from broker.app.runtime import BrokerApp
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    adapter_of,
    all_closed,
    check_delivery,
    create_all_topics,
    eventually,
    kapua_app,
    kapua_section,
    read_events,
    read_kapua_state,
    read_topic_raw,
    wait_owning,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

COMPACT_NOW = {
    "cleanup.policy": "compact",
    "segment.ms": "200",
    "min.cleanable.dirty.ratio": "0.001",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "1000",
}


async def force_compaction(kafka: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, kafka.state_topic, COMPACT_NOW)]
        )
        errors = [r[0] for response in responses for r in response.resources]
        assert errors == [0], f"state topic configs not altered: {responses}"
        cluster = await admin.describe_cluster()
        for broker in cluster["brokers"]:  # dynamic broker setting (default 15 s); best effort
            with contextlib.suppress(Exception):
                await admin.alter_configs(
                    [
                        ConfigResource(
                            ConfigResourceType.BROKER,
                            str(broker["node_id"]),
                            {"log.cleaner.backoff.ms": "500"},
                        )
                    ]
                )
    finally:
        await admin.close()


async def state_log(kafka: KafkaSettings) -> list[tuple[int, int, str, Any]]:
    raw = await read_topic_raw(kafka.bootstrap_servers, kafka.state_topic)
    return [
        (p, o, (k or b"").decode(), None if v is None else orjson.loads(v))
        for p, o, k, v in sorted(raw, key=lambda r: (r[0], r[1]))
    ]


def compacted(log: list[tuple[int, int, str, Any]]) -> bool:
    """Offsets missing inside a partition: the cleaner removed superseded records."""
    by_partition: dict[int, list[int]] = {}
    for p, o, _, _ in log:
        by_partition.setdefault(p, []).append(o)
    return any(
        offsets[0] > 0 or offsets[-1] - offsets[0] + 1 > len(offsets)
        for offsets in by_partition.values()
    )


def assert_cursors_never_regress(log: list[tuple[int, int, str, Any]]) -> int:
    """In offset order, each cursor record of an operation contains every id of the previous."""
    last: dict[str, set[str]] = {}
    checked = 0
    for _, _, key, value in log:
        okey, kind = parse_record_key(key)
        if kind != "cursor" or value is None:
            continue
        seen = set(value["seen"])
        assert last.get(okey, set()) <= seen, f"cursor of {okey} regressed"
        last[okey] = seen
        checked += 1
    return checked


async def test_compaction_and_clean_handover_keep_cursors_and_publish_each_row_once(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    async with KapuaSimulator(SimConfig(devices=8)) as sim:
        await create_all_topics(kafka_settings)
        await force_compaction(kafka_settings)
        apps: dict[str, BrokerApp] = {
            name: kapua_app(
                kafka_settings,
                kapua_section(sim, topic_prefix, watch_topic_enabled=False, instance_id=name),
            )
            for name in ("alpha", "beta")
        }
        for app in apps.values():
            await app.start()
        alpha, beta = apps["alpha"], apps["beta"]
        stopped: set[str] = set()
        snapshots: list[dict[str, set[str]]] = []
        try:
            await wait_owning([adapter_of(alpha), adapter_of(beta)])

            async def both_own() -> bool:
                return bool(adapter_of(alpha).shard.loaded and adapter_of(beta).shard.loaded)

            await eventually(both_own, 60, "both instances own state partitions")
            await wait_owning([adapter_of(alpha), adapter_of(beta)])
            ops = [
                sim.state.start_operation(
                    "AQ", d, steps=40, step_interval_s=0.25, fail=i % 4 == 3, jitter_s=0.1
                )
                for i, d in enumerate(list(sim.state.devices["AQ"]) * 2)
            ]

            async def compacted_with_progress() -> bool:
                state = await read_kapua_state(kafka_settings)
                cursors = {k: r for k, r in state.items() if r.kind == "cursor" and r.seen}
                return len(cursors) >= len(ops) // 2 and compacted(await state_log(kafka_settings))

            await eventually(
                compacted_with_progress, 90, "state topic compacted under load", every_s=1.0
            )
            before = await read_kapua_state(kafka_settings)
            snapshots.append({k: set(r.seen) for k, r in before.items() if r.kind == "cursor"})
            await beta.stop()  # clean handover: beta checkpoints, leaves; alpha takes over
            stopped.add("beta")
            await wait_owning([adapter_of(alpha)])

            async def finished() -> bool:
                return all_closed(sim) and not adapter_of(alpha).scheduler.ops

            await eventually(finished, 120, "every operation closed and unwatched", every_s=1.0)
            after = await read_kapua_state(kafka_settings)
            snapshots.append({k: set(r.seen) for k, r in after.items() if r.kind == "cursor"})
        finally:
            for name, app in apps.items():
                if name not in stopped:
                    await app.stop()
        records = await read_events(kafka_settings)
        log = await state_log(kafka_settings)

    # No cursor regresses: neither in the log's order nor between the merged snapshots.
    assert assert_cursors_never_regress(log) > 0
    first, second = snapshots
    for key, seen in first.items():
        assert seen <= second.get(key, seen), f"cursor of {key} regressed across the handover"
    # Every row returned by Kapua is in Kafka, one terminal per operation, order kept...
    counts = check_delivery(sim, records)
    assert counts["terminal"] == len(ops)
    # ...and nothing was published twice: not by the handover, not by discovery on both.
    ids = [r.event.id for r in records]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"republished after a clean handover: {duplicates[:5]}"
