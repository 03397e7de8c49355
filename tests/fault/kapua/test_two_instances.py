"""Two `mdm-broker run` instances split the operations through the state topic's consumer group;
when one is SIGKILLed the other takes its operations over and completes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.devtools.devkafka import free_port
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    BrokerProcess,
    all_closed,
    check_delivery,
    create_all_topics,
    eventually,
    kapua_section,
    read_events,
    write_toml,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

UA = "mdm-notification-broker/"


async def test_two_instances_split_then_survivor_takes_over(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    async with KapuaSimulator(SimConfig(devices=30)) as sim:
        await create_all_topics(kafka_settings)
        brokers: dict[str, BrokerProcess] = {}
        for name in ("alpha", "beta"):
            kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False, instance_id=name)
            port = free_port()
            config = write_toml(tmp_path / f"{name}.toml", kafka_settings, kapua, port)
            brokers[name] = BrokerProcess(config, tmp_path / f"{name}.log", port)
            await brokers[name].start()
        alpha, beta = brokers["alpha"], brokers["beta"]
        try:

            async def split() -> bool:
                a, b = await alpha.owned_partitions(), await beta.owned_partitions()
                return a > 0 and b > 0 and a + b == kafka_settings.partitions

            await eventually(split, 60, "both instances own state partitions")
            sim.state.polls.clear()
            ops = [
                sim.state.start_operation(
                    "AQ", d, steps=16, step_interval_s=1.0, fail=i % 5 == 4, jitter_s=0.3
                )
                for i, d in enumerate(list(sim.state.devices["AQ"]) * 5)
            ]

            async def all_polled() -> bool:
                return all(op.id in sim.state.polls for op in ops)

            await eventually(all_polled, 60, "every operation polled")
            stable = {k: [list(s) for s in v] for k, v in sim.state.polls.items()}
            await beta.kill()

            async def finished() -> bool:
                return all_closed(sim)

            await eventually(finished, 120, "all operations closed", 1.0)

            async def terminals() -> bool:
                records = await read_events(kafka_settings)
                return len({r.event.id for r in records if ":" in r.event.id}) == len(ops)

            await eventually(terminals, 60, "every terminal event published", 2.0)
        finally:
            await beta.kill()
            assert await alpha.stop() == 0
        records = await read_events(kafka_settings)

    # While both ran, each operation was polled by exactly one instance.
    owners = {op: {client for client, _ in segments} for op, segments in stable.items()}
    assert all(len(o) == 1 for o in owners.values()), [o for o in owners.values() if len(o) > 1]
    by_beta = {op for op, o in owners.items() if o == {UA + "beta"}}
    by_alpha = {op for op, o in owners.items() if o == {UA + "alpha"}}
    assert by_beta, "beta polled nothing: the work was not split"
    assert by_alpha, "alpha polled nothing: the work was not split"
    # After the kill, alpha polled every operation beta had been polling.
    for op in by_beta:
        last_client = sim.state.polls[op][-1][0]
        assert last_client == UA + "alpha", op
    counts = check_delivery(sim, records)
    assert counts["terminal"] == len(ops)
