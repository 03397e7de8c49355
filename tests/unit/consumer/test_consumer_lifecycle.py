"""IdempotentConsumer lifecycle without a Kafka: clear errors, no leaked resources."""

from __future__ import annotations

import pytest

from broker.consumer import ConsumerError, ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.devtools.devkafka import free_port
from broker.events import CanonicalEvent


async def _handler(event: CanonicalEvent, tx: None) -> None:
    return None


async def test_unreachable_kafka_raises_consumer_error_each_start_and_stop_is_safe() -> None:
    """A failed start leaves the consumer startable (a retry after the cause is fixed: the
    real-Kafka test in tests/integration/security/test_start_retry.py); stop() makes it final."""
    settings = ConsumerSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        group_id="g",
        request_timeout_s=3.0,
        dlq_publish_timeout_s=3.0,
    )
    consumer = IdempotentConsumer(settings, InMemoryStore(), _handler)
    with pytest.raises(ConsumerError, match=r"cannot start.*Kafka is unreachable"):
        await consumer.start()
    with pytest.raises(ConsumerError, match=r"cannot start.*Kafka is unreachable"):
        await consumer.start()  # retried: the same named error, nothing left open
    await consumer.stop()
    await consumer.stop()  # idempotent
    with pytest.raises(ConsumerError, match="cannot be restarted"):
        await consumer.start()


async def test_stop_before_start_is_a_no_op() -> None:
    consumer = IdempotentConsumer(ConsumerSettings(group_id="g"), InMemoryStore(), _handler)
    await consumer.stop()
    await consumer.stop()
