"""`mdm-broker run` SIGKILLed mid-run and restarted: nothing lost, duplicates only of events that
were published but not yet checkpointed when it died."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    Record,
    all_closed,
    check_delivery,
    create_all_topics,
    end_offsets,
    eventually,
    kapua_section,
    read_events,
    read_kapua_state,
    start_broker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_sigkill_then_restart_loses_nothing_and_only_repeats_uncheckpointed(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    async with KapuaSimulator(SimConfig(devices=20, token_ttl_s=4.0)) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False, instance_id="a")
        await create_all_topics(kafka_settings)
        first = await start_broker(tmp_path, kafka_settings, kapua, "first")
        try:
            # Long enough to outlive the kill, the dead member's session (6 s) and the reload.
            ops = [
                sim.state.start_operation(
                    "AQ", d, steps=16, step_interval_s=1.0, fail=i % 4 == 3, jitter_s=0.3
                )
                for i, d in enumerate(list(sim.state.devices["AQ"]) * 10)
            ]

            async def publishing() -> bool:
                published = await first.value(
                    "mdm_broker_events_published_total",
                    vendor="kapua",
                    type="mdm.operation.progressed",
                )
                return published >= 2 * len(ops)

            await eventually(publishing, 60, "first broker published progress")
        finally:
            await first.kill()  # mid-run: polls in flight, cursors possibly not written yet

        # What was durable at the moment of death.
        state = await read_kapua_state(kafka_settings)
        checkpointed: set[str] = set()
        for record in state.values():
            checkpointed.update(record.seen)
            if record.kind == "done":
                checkpointed.add(f"{record.operation_id}:{record.status}")
        ends_at_kill = await end_offsets(
            kafka_settings.bootstrap_servers, kafka_settings.events_topic
        )
        before = await read_events(kafka_settings, ends_at_kill)
        published_before = {r.event.id for r in before}
        assert checkpointed, "the first broker checkpointed nothing"
        assert any(r.kind == "cursor" for r in state.values())

        second = await start_broker(
            tmp_path, kafka_settings, kapua | {"instance_id": "a2"}, "second", owning=False
        )
        try:

            async def finished() -> bool:
                if not all_closed(sim):
                    return False
                records = await read_events(kafka_settings)
                terminal = {r.event.id for r in records if ":" in r.event.id}
                return len(terminal) == len(ops)

            await eventually(finished, 120, "all operations closed and their terminal published", 2)
        finally:
            assert await second.stop() == 0
        records = await read_events(kafka_settings)

    counts = check_delivery(sim, records)  # nothing lost, one terminal id per operation
    assert counts["terminal"] == len(ops)
    after = [r for r in records if r.offset >= ends_at_kill.get(r.partition, 0)]
    repeated = {r.event.id for r in after} & published_before
    # The restarted broker never re-publishes what was checkpointed ...
    assert not repeated & checkpointed, sorted(repeated & checkpointed)[:5]
    # ... and every duplicate in the topic is such a published-but-not-checkpointed event.
    seen: dict[str, Record] = {}
    for r in records:
        if r.event.id in seen:
            assert r.event.id in published_before - checkpointed, r.event.id
        seen[r.event.id] = r
