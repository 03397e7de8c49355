"""Record-fatal and producer-fatal Kafka errors against a real Kafka (issue 10, items 1 and 2).

The faults are real: records larger than the topic's ``max.message.bytes``, rejected by the
broker. A broker-side rejection breaks aiokafka's idempotent session (the rejected batch took
sequence numbers the broker never saw; every later batch of that partition gets
``OutOfOrderSequenceNumber``): the publisher must replace the producer by itself.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from broker.devtools.examples import example_events
from broker.errors import PublishError, RecordRejectedError
from broker.events import CanonicalEvent, EventType, decode_event
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics
from tests.kafka_helpers import read_records

pytestmark = pytest.mark.kafka


def _event(event_id: str, key: str, pad_bytes: int = 0) -> CanonicalEvent:
    base = example_events()[EventType.ASSET_COUNT_CHANGED]
    data = dict(base.data)
    if pad_bytes:
        data["raw"] = {**data["raw"], "pad": "x" * pad_bytes}
    return base.model_copy(update={"id": event_id, "partitionkey": key, "data": data})


def _metric(metrics: BrokerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _create(bootstrap: str, topic: str, max_message_bytes: int, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    partitions,
                    1,
                    topic_configs={"max.message.bytes": str(max_message_bytes)},
                )
            ]
        )
    finally:
        await admin.close()


async def test_oversized_event_is_refused_before_sending_and_others_flow(
    kafka_settings: KafkaSettings,
) -> None:
    await create_topics(kafka_settings)
    health, metrics = KafkaHealth(), BrokerMetrics()
    async with KafkaPublisher(kafka_settings, health, metrics) as publisher:
        big = _event("big", "apple:1", pad_bytes=kafka_settings.max_request_bytes)
        with pytest.raises(RecordRejectedError) as info:
            await publisher.publish([big])
        assert info.value.reason == "record_too_large"
        assert info.value.indices == (0,)
        assert not info.value.retriable
        assert health.healthy  # one record's fate is not the cluster's
        for i in range(100):  # same partition key and another one
            await publisher.publish([_event(f"n{i}", "apple:1" if i % 2 else "apple:2")])
        assert health.healthy
        assert publisher.producer_generation == 1  # nothing was sent: the session is intact
    assert (
        _metric(
            metrics, "mdm_broker_records_rejected_total", vendor="apple", reason="record_too_large"
        )
        == 1
    )
    records = await read_records(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 100)
    assert sorted(decode_event(r.value).id for r in records) == sorted(f"n{i}" for i in range(100))


async def test_broker_rejection_replaces_the_stuck_producer_under_load(
    kafka_settings: KafkaSettings,
) -> None:
    """The topic takes less than the publisher believes: Kafka itself rejects the record."""
    await _create(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 50_000)
    health, metrics = KafkaHealth(), BrokerMetrics()
    acked: list[str] = []

    async def writer(name: str, key: str, count: int) -> None:
        for i in range(count):
            event = _event(f"{name}-{i}", key)
            for attempt in range(40):  # a caller retries a retriable PublishError
                try:
                    await publisher.publish([event])
                    break
                except RecordRejectedError:
                    raise
                except PublishError:
                    assert attempt < 39, "publishing did not resume"
                    await asyncio.sleep(0.05)
            acked.append(event.id)

    async with KafkaPublisher(kafka_settings, health, metrics) as publisher:
        for i in range(10):  # advance the idempotent sequence of the partition
            await publisher.publish([_event(f"warm-{i}", "apple:1")])
        writers = [asyncio.create_task(writer(f"w{n}", "apple:1", 30)) for n in range(4)]
        writers.append(asyncio.create_task(writer("other", "apple:2", 30)))
        with pytest.raises(RecordRejectedError) as info:
            await publisher.publish([_event("big", "apple:1", pad_bytes=200_000)])
        assert info.value.reason == "record_too_large"
        await asyncio.gather(*writers)
        for i in range(100):
            await publisher.publish([_event(f"after-{i}", "apple:1" if i % 2 else "apple:2")])
        assert health.healthy
        assert publisher.producer_generation >= 2
    # One broken session, one replacement. Which failure reports it first is a race: the
    # rejected batch itself, or a concurrent writer's batch behind it on the same partition.
    recreated = {
        reason: _metric(metrics, "mdm_broker_producer_recreated_total", reason=reason)
        for reason in ("record_too_large", "OutOfOrderSequenceNumber")
    }
    assert sum(recreated.values()) == 1, recreated
    expected = {f"warm-{i}" for i in range(10)} | set(acked) | {f"after-{i}" for i in range(100)}
    records = await read_records(
        kafka_settings.bootstrap_servers, kafka_settings.events_topic, len(expected)
    )
    written = {decode_event(r.value).id for r in records}
    assert expected <= written
    assert "big" not in written


async def test_dead_letter_too_large_is_stored_truncated_with_size_and_digest(
    kafka_settings: KafkaSettings,
) -> None:
    settings = kafka_settings.model_copy(update={"max_request_bytes": 100_000})
    await create_topics(settings)  # max.message.bytes = 100000 on every topic
    payload = bytes(range(256)) * 1200  # 307,200 bytes
    metrics = BrokerMetrics()
    async with KafkaPublisher(settings, KafkaHealth(), metrics) as publisher:
        await publisher.dead_letter(payload, vendor="apple", reason="record_too_large", tenant="t")
        await publisher.dead_letter(b"small", vendor="apple", reason="malformed", tenant="t")
    records = await read_records(settings.bootstrap_servers, settings.dlq_topic, 2)
    assert len(records) == 2
    cut, small = records
    headers = dict(cut.headers)
    assert headers["dlq-truncated"] == b"true"
    assert headers["dlq-original-size"] == str(len(payload)).encode()
    assert headers["dlq-original-sha256"] == hashlib.sha256(payload).hexdigest().encode()
    assert headers["dlq-reason"] == b"record_too_large"
    assert 90_000 < len(cut.value) < 100_000
    assert payload.startswith(cut.value)
    assert small.value == b"small"
    assert "dlq-truncated" not in dict(small.headers)
    assert _metric(metrics, "mdm_broker_dead_letters_truncated_total", vendor="apple") == 1


async def test_dead_letter_fits_a_dlq_topic_smaller_than_the_producer_limit(
    kafka_settings: KafkaSettings,
) -> None:
    """The DLQ topic was made elsewhere with 200 kB: Kafka rejects, the DLQ write still lands."""
    await _create(kafka_settings.bootstrap_servers, kafka_settings.dlq_topic, 200_000, 1)
    payload = b"y" * 1_500_000
    health = KafkaHealth()
    async with KafkaPublisher(kafka_settings, health, BrokerMetrics()) as publisher:
        await publisher.dead_letter(payload, vendor="android", reason="record_too_large")
        await publisher.dead_letter(b"next", vendor="android", reason="schema")
        assert health.healthy
    records = await read_records(kafka_settings.bootstrap_servers, kafka_settings.dlq_topic, 2)
    assert len(records) == 2
    assert 100_000 < len(records[0].value) < 200_000  # cut to the limit Kafka reported
    assert dict(records[0].headers)["dlq-original-size"] == b"1500000"
    assert records[1].value == b"next"


async def test_out_of_order_sequence_from_kafka_replaces_the_producer(
    kafka_settings: KafkaSettings,
) -> None:
    """A real ``OutOfOrderSequenceNumber``: records queued behind a batch the broker rejected.

    The oversized record (larger than a producer batch, so alone in its batch) is rejected by the
    topic; the small records of the same partition, already queued in the same producer session,
    then carry sequence numbers the broker cannot accept. Their callers get a retriable
    PublishError caused by OutOfOrderSequenceNumber, and a retry goes through a new producer.
    """
    from aiokafka.errors import OutOfOrderSequenceNumber

    await _create(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 50_000)
    health, metrics = KafkaHealth(), BrokerMetrics()
    async with KafkaPublisher(kafka_settings, health, metrics) as publisher:
        for i in range(5):
            await publisher.publish([_event(f"warm-{i}", "apple:1")])
        big = _event("big", "apple:1", pad_bytes=kafka_settings.max_batch_bytes + 10_000)
        smalls = [_event(f"small-{i}", "apple:1") for i in range(5)]
        # Tasks run in creation order: the big record is queued first, the small ones behind it.
        tasks = [asyncio.create_task(publisher.publish([big]))]
        tasks += [asyncio.create_task(publisher.publish([e])) for e in smalls]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[0], RecordRejectedError)
        causes = [type(o.__cause__) for o in outcomes[1:] if isinstance(o, PublishError)]
        assert OutOfOrderSequenceNumber in causes, outcomes
        assert not any(isinstance(o, RecordRejectedError) for o in outcomes[1:])  # not theirs
        assert health.healthy
        await publisher.publish(smalls)  # the vendor's retry: through a new session
        assert publisher.producer_generation == 2
    records = await read_records(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 10)
    written = {decode_event(r.value).id for r in records}
    assert {e.id for e in smalls} <= written


def _keys_on_two_partitions(partitions: int) -> tuple[str, str]:
    """Two partition keys the default partitioner puts on different partitions."""
    from broker.publisher import murmur2

    def partition(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    first = "apple:1"
    other = next(f"apple:{i}" for i in range(2, 100) if partition(f"apple:{i}") != partition(first))
    return first, other


async def test_calls_of_one_loop_turn_are_flushed_together_each_with_its_own_outcome(
    kafka_settings: KafkaSettings,
) -> None:
    """Concurrent calls share one flush; Kafka's rejection of one call's record (a topic smaller
    than the publisher believes) fails that call only, not its neighbours on other partitions."""
    await _create(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 50_000)
    small_key, big_key = _keys_on_two_partitions(3)
    health, metrics = KafkaHealth(), BrokerMetrics()
    async with KafkaPublisher(kafka_settings, health, metrics) as publisher:
        await publisher.publish([_event("warm", small_key)])
        smalls = [_event(f"small-{i}", small_key) for i in range(30)]
        big = _event("big", big_key, pad_bytes=200_000)
        tasks = [asyncio.create_task(publisher.publish([e])) for e in smalls[:15]]
        tasks.append(asyncio.create_task(publisher.publish([big])))
        tasks += [asyncio.create_task(publisher.publish([e])) for e in smalls[15:]]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[15], RecordRejectedError)
        assert outcomes[15].reason == "record_too_large"
        assert outcomes[:15] + outcomes[16:] == [None] * 30
        assert health.healthy
    records = await read_records(kafka_settings.bootstrap_servers, kafka_settings.events_topic, 31)
    written = {decode_event(r.value).id for r in records}
    assert written == {"warm"} | {e.id for e in smalls}


async def test_a_call_cancelled_before_its_flush_sends_nothing(
    kafka_settings: KafkaSettings,
) -> None:
    await create_topics(kafka_settings)
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        cancelled = asyncio.create_task(publisher.publish([_event("cancelled", "apple:1")]))
        await asyncio.sleep(0)  # the call is pending; its flush is scheduled, not yet run
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await publisher.publish([_event("after", "apple:1")])
    records = await read_records(
        kafka_settings.bootstrap_servers, kafka_settings.events_topic, 2, timeout_s=3.0
    )
    assert [decode_event(r.value).id for r in records] == ["after"]
