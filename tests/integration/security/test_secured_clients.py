"""Every Kafka client of the project over SASL_SSL/SCRAM-SHA-512 and over mutual TLS.

One broker run per listener: topics created, the Kapua adapter joins its shard group and loads
state, operations are published and their state written; then the IdempotentConsumer and
`mdm-broker tail` read the same events back, each with the same KafkaSecurity settings.
"""

from __future__ import annotations

import asyncio
import io

import pytest

from broker.app.tail import TailOptions, tail
from broker.consumer import ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.devtools.devkafka import KafkaCluster
from broker.events import CanonicalEvent
from broker.state import load_state
from broker.topics import create_topics
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    adapter_of,
    kapua_app,
    kapua_section,
    wait_operations_closed,
    wait_owning,
)
from tests.integration.security.helpers import kafka_settings, wait_for

pytestmark = [pytest.mark.kafka]


def listener(cluster: KafkaCluster, mode: str) -> tuple[str, object]:
    if mode == "scram":
        return cluster.bootstrap_servers, cluster.scram_security("mdm-broker")
    return cluster.mtls_bootstrap_servers, cluster.mtls_security()


@pytest.mark.parametrize("mode", ["scram", "mtls"])
async def test_broker_state_shards_consumer_and_tail_over_secured_listener(
    mode: str, secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    bootstrap, security = listener(secure_kafka, mode)
    kafka = kafka_settings(bootstrap, security, topic_prefix)  # type: ignore[arg-type]
    assert sorted(await create_topics(kafka)) == sorted(
        [kafka.events_topic, kafka.dlq_topic, kafka.state_topic]
    )
    async with KapuaSimulator(SimConfig(devices=2)) as sim:
        kapua = kapua_section(sim, f"{topic_prefix}-kapua", watch_topic_enabled=False)
        app = kapua_app(kafka, kapua)
        await app.start()
        try:
            assert app.health.healthy
            await wait_owning([adapter_of(app)])  # shard group joined, state partitions loaded
            ops = [
                sim.state.start_operation("AQ", device, steps=2, step_interval_s=0.2, fail=False)
                for device in sim.state.devices["AQ"]
            ]
            await wait_operations_closed(sim, app, len(ops), "operations closed over TLS")
        finally:
            await app.stop()
    state = await load_state(kafka, prefix="kapua/")
    assert state, "the Kapua adapter's state records are readable back over the same listener"

    seen: list[CanonicalEvent] = []
    settings = ConsumerSettings(
        bootstrap_servers=bootstrap,
        topic=kafka.events_topic,
        group_id=f"{topic_prefix}-downstream",
        dlq_topic=kafka.dlq_topic,
        security=security,
        session_timeout_s=6.0,
        heartbeat_interval_s=0.5,
        poll_timeout_s=0.1,
    )

    async def handle(event: CanonicalEvent, tx: None) -> None:
        seen.append(event)

    stop = asyncio.Event()
    consumer = IdempotentConsumer(settings, InMemoryStore(), handle)
    task = asyncio.create_task(consumer.run_until(stop))

    async def terminal_events_consumed() -> bool:
        return sum(e.type.value.endswith(("completed", "failed")) for e in seen) >= len(ops)

    try:
        await wait_for(terminal_events_consumed, 60, "IdempotentConsumer over TLS")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    out, err = io.StringIO(), io.StringIO()
    printed = await tail(
        kafka,
        TailOptions(json_output=True, from_beginning=True, max_events=len(seen)),
        out=out,
        err=err,
    )
    assert printed == len(seen)
    assert all(e.id in out.getvalue() for e in seen)
