"""IdempotentConsumer lifecycle without a Kafka: clear errors, no leaked resources."""

from __future__ import annotations

import pytest

from broker.consumer import ConsumerError, ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.devtools.devkafka import free_port
from broker.events import CanonicalEvent


async def _handler(event: CanonicalEvent, tx: None) -> None:
    return None


async def test_unreachable_kafka_raises_consumer_error_and_refuses_restart() -> None:
    settings = ConsumerSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        group_id="g",
        request_timeout_s=3.0,
        dlq_publish_timeout_s=3.0,
    )
    consumer = IdempotentConsumer(settings, InMemoryStore(), _handler)
    with pytest.raises(ConsumerError, match="cannot start"):
        await consumer.start()
    with pytest.raises(ConsumerError, match="cannot be restarted"):
        await consumer.start()
    await consumer.stop()  # idempotent


async def test_stop_before_start_is_a_no_op() -> None:
    consumer = IdempotentConsumer(ConsumerSettings(group_id="g"), InMemoryStore(), _handler)
    await consumer.stop()
    await consumer.stop()
