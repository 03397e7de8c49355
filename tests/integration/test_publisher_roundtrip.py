"""Publisher against a real Kafka: every canonical type round-trips and the CloudEvents SDK reads it."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.kafka import KafkaMessage, from_structured

from broker.devtools.examples import example_events
from broker.events import EventType, decode_event
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import check_topics, create_topics, topic_specs
from tests.kafka_helpers import read_records

pytestmark = pytest.mark.kafka


async def test_every_type_round_trips_and_cloudevents_sdk_parses_it(
    kafka_settings: KafkaSettings,
) -> None:
    await create_topics(kafka_settings)
    events = list(example_events().values())
    metrics = BrokerMetrics()
    async with KafkaPublisher(kafka_settings, KafkaHealth(), metrics) as publisher:
        await publisher.publish(events)

    records = await read_records(
        kafka_settings.bootstrap_servers, kafka_settings.events_topic, len(events)
    )
    assert len(records) == len(events)
    by_id = {e.id: e for e in events}
    seen_types = set()
    for record in records:
        assert record.headers == (("content-type", b"application/cloudevents+json"),)
        ours = decode_event(record.value)
        original = by_id[ours.id]
        assert ours == original
        assert record.key == original.partitionkey.encode()
        sdk_event = from_structured(
            KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        )
        assert sdk_event["specversion"] == "1.0"
        assert sdk_event["id"] == original.id
        assert sdk_event["source"] == original.source
        assert sdk_event["type"] == original.type.value
        assert sdk_event["vendor"] == original.vendor.value
        assert sdk_event["partitionkey"] == original.partitionkey
        assert sdk_event.get_data() == original.data
        seen_types.add(ours.type)
    assert seen_types == set(EventType)
    published = sum(
        s.value
        for m in metrics.registry.collect()
        if m.name == "mdm_broker_events_published"
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert published == len(events)


async def test_one_keys_records_keep_their_order_in_one_partition(
    kafka_settings: KafkaSettings,
) -> None:
    await create_topics(kafka_settings)
    base = example_events()[EventType.OPERATION_PROGRESSED]
    events = [base.model_copy(update={"id": f"n{i}"}) for i in range(200)]
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        for start in range(0, 200, 50):
            await publisher.publish(events[start : start + 50])
    records = await read_records(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 200)
    assert len({r.partition for r in records}) == 1
    assert [decode_event(r.value).id for r in records] == [e.id for e in events]


async def test_each_key_lands_where_a_bare_aiokafka_producer_puts_it(
    kafka_settings: KafkaSettings,
) -> None:
    """The publisher picks partitions itself (murmur2 memoised per key): the same ones aiokafka's
    default partitioner picks, before and after the memo fills, across several calls."""
    await create_topics(kafka_settings)
    base = example_events()[EventType.OPERATION_PROGRESSED]
    events = [
        base.model_copy(update={"id": f"n{i}", "partitionkey": f"kapua:t:dev{i % 40}"})
        for i in range(120)
    ]
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        for start in range(0, 120, 30):
            await publisher.publish(events[start : start + 30])
    ours = await read_records(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 120)
    bare_topic = kafka_settings.state_topic  # same partition count, compacted: keys suffice
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    await producer.start()
    try:
        bare = {
            key: (await producer.send_and_wait(bare_topic, b"x", key=key)).partition
            for key in {e.partitionkey.encode() for e in events}
        }
    finally:
        await producer.stop()
    assert len(ours) == 120
    assert len(set(bare.values())) > 1
    assert {r.key: r.partition for r in ours} == bare


async def test_dead_letter_keeps_payload_and_reason(kafka_settings: KafkaSettings) -> None:
    await create_topics(kafka_settings)
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        await publisher.dead_letter(
            b"{not json", vendor="apple", reason="malformed", detail="line 1", tenant="42"
        )
    (record,) = await read_records(kafka_settings.bootstrap_servers, kafka_settings.dlq_topic, 1)
    headers = dict(record.headers)
    assert record.value == b"{not json"
    assert headers["dlq-reason"] == b"malformed"
    assert headers["vendor"] == b"apple"
    assert headers["tenant"] == b"42"


async def test_topics_create_is_idempotent_and_state_topic_is_compacted(
    kafka_settings: KafkaSettings,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    created = await create_topics(kafka_settings)
    assert sorted(created) == sorted(s.name for s in topic_specs(kafka_settings))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    await admin.start()
    try:
        # Listed as soon as create_topics returns: a broker started next must not warn "missing".
        assert set(created) <= set(await admin.list_topics())
        assert (await check_topics(kafka_settings)).missing == []
        assert await create_topics(kafka_settings) == []
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, kafka_settings.state_topic)]
        )
        entries = {row[0]: row[1] for row in described[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
        meta = await admin.describe_topics([kafka_settings.events_topic])
        assert len(meta[0]["partitions"]) == kafka_settings.partitions
    finally:
        await admin.close()


async def test_aiokafka_consumer_groups_split_partitions(kafka_settings: KafkaSettings) -> None:
    """aiokafka 0.14 against this Kafka release: idempotent producer + a two-member group."""
    await create_topics(kafka_settings)
    topic = kafka_settings.events_topic
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        for i in range(60):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_settings.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        for _ in range(2)
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        seen: dict[int, set[bytes]] = {0: set(), 1: set()}
        for _ in range(60):
            for index, consumer in enumerate(consumers):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    seen[index].update(r.value for r in records)
            assigned = [c.assignment() for c in consumers]
            if len(seen[0] | seen[1]) == 60 and all(assigned):
                break
        assert len(seen[0] | seen[1]) == 60
        assert not seen[0] & seen[1]
        assert all(c.assignment() for c in consumers)
        assert not consumers[0].assignment() & consumers[1].assignment()
    finally:
        for consumer in consumers:
            await consumer.stop()
