"""A ``start()`` Kafka refused can be retried on the same object once the cause is fixed.

The publisher and the consumer library's ``IdempotentConsumer`` start with a SASL password the
node does not know yet: ``start()`` fails naming the credentials and leaves no aiokafka client and
no task behind (``asyncio.all_tasks``; an unclosed client would be a ResourceWarning, an error in
this suite); ``stop()`` is then a safe no-op. The operator sets that password on Kafka; ``start()``
on the same object succeeds and the object works.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from broker.consumer import ConsumerError, ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.devtools.devkafka import KafkaCluster
from broker.devtools.examples import example_events
from broker.errors import PublishError
from broker.events import CanonicalEvent, EventType
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics
from tests.integration.security.helpers import (
    DESCRIBE,
    GROUP,
    READ,
    TOPIC,
    WRITE,
    grant,
    kafka_settings,
)

pytestmark = [pytest.mark.kafka]

PASSWORD = "set-later-secret-5"


async def _user_not_yet_known(cluster: KafkaCluster, prefix: str) -> tuple[str, KafkaSettings]:
    """A principal granted everything on this test's topics and groups whose password
    (``PASSWORD``) Kafka does not know yet; its settings; the topics exist."""
    user = f"s-{prefix}"[:60]
    await asyncio.to_thread(cluster.set_scram_password, user, "not-the-one-given-1")
    admin = kafka_settings(cluster.bootstrap_servers, cluster.scram_security("mdm-broker"), prefix)
    await create_topics(admin)
    topics = (admin.events_topic, admin.dlq_topic, admin.state_topic)
    grants = [(f"User:{user}", TOPIC, t, op) for t in topics for op in (READ, WRITE, DESCRIBE)]
    await grant(cluster, [*grants, (f"User:{user}", GROUP, f"{prefix}-lib", READ)])
    security = cluster.scram_security(user, password=PASSWORD)
    return user, admin.model_copy(update={"security": security})


def _other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_a_publisher_refused_at_start_starts_on_retry_once_the_password_is_set(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    user, kafka = await _user_not_yet_known(secure_kafka, topic_prefix)
    publisher = KafkaPublisher(kafka, KafkaHealth(), BrokerMetrics())
    before = _other_tasks()
    with pytest.raises(PublishError, match="authentication: Kafka rejected the SASL credentials"):
        await publisher.start()
    gc.collect()  # an unclosed aiokafka producer warns here (an error in this suite)
    assert _other_tasks() <= before

    await asyncio.to_thread(secure_kafka.set_scram_password, user, PASSWORD)
    await publisher.start()
    event: CanonicalEvent = example_events()[EventType.ASSET_COUNT_CHANGED]
    await publisher.publish([event])
    report = await publisher.stop()
    assert report.complete
    await publisher.stop()


async def test_a_consumer_refused_at_start_starts_on_retry_once_the_password_is_set(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    user, kafka = await _user_not_yet_known(secure_kafka, topic_prefix)
    settings = ConsumerSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic=kafka.events_topic,
        group_id=f"{topic_prefix}-lib",
        dlq_topic=kafka.dlq_topic,
        security=kafka.security,
        request_timeout_s=5.0,
        dlq_publish_timeout_s=5.0,
    )

    async def handle(event: CanonicalEvent, tx: None) -> None:
        return None

    consumer = IdempotentConsumer(settings, InMemoryStore(), handle)
    before = _other_tasks()
    with pytest.raises(ConsumerError, match="Kafka rejected the SASL credentials"):
        await consumer.start()
    gc.collect()
    assert _other_tasks() <= before

    await asyncio.to_thread(secure_kafka.set_scram_password, user, PASSWORD)
    await consumer.start()
    await consumer.stop()
    await consumer.stop()
    with pytest.raises(ConsumerError, match="cannot be restarted"):
        await consumer.start()
