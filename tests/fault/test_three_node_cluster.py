"""The launcher's 3-node KRaft cluster: replicated acks=all writes survive the loss of one node."""

from __future__ import annotations

import asyncio

import pytest

from broker.devtools.devkafka import KafkaCluster
from broker.devtools.examples import example_events
from broker.events import EventType, decode_event
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics
from tests.kafka_helpers import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_three_nodes_keep_accepting_writes_with_one_node_down() -> None:
    cluster = await asyncio.to_thread(KafkaCluster(nodes=3, heap_mb=384).start)
    try:
        settings = KafkaSettings(
            bootstrap_servers=cluster.bootstrap_servers,
            partitions=3,
            replication_factor=3,
            publish_timeout_s=20,
            request_timeout_s=10,
        )
        await create_topics(settings)
        base = example_events()[EventType.USER_CREATED]
        first = [base.model_copy(update={"id": f"a{i}"}) for i in range(30)]
        second = [base.model_copy(update={"id": f"b{i}"}) for i in range(30)]
        async with KafkaPublisher(settings, KafkaHealth(), BrokerMetrics()) as publisher:
            await publisher.publish(first)
            await asyncio.to_thread(cluster.stop_node, 2, hard=True)
            await publisher.publish(second)  # min.insync.replicas=2 of 3 still holds
        records = await read_records(settings.bootstrap_servers, settings.events_topic, 60, 60)
        ids = {decode_event(r.value).id for r in records}
        assert ids == {e.id for e in first + second}
    finally:
        await asyncio.to_thread(cluster.stop)
