"""The compacted state topic: newest value per key wins, tombstones delete, partitions filter."""

from __future__ import annotations

import pytest

from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.state import StateWriter, load_state, state_partitions
from broker.topics import create_topics

pytestmark = pytest.mark.kafka


async def test_state_round_trip(kafka_settings: KafkaSettings) -> None:
    assert await load_state(kafka_settings) == {}  # topic does not exist yet: no state
    await create_topics(kafka_settings)
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        writer = StateWriter(publisher)
        for i in range(20):
            await writer.put(f"a/{i}", {"cursor": i})
        await writer.put("a/3", {"cursor": 33})
        await writer.delete("a/4")
        await writer.put("b/1", [1, 2])
    state = await load_state(kafka_settings, prefix="a/")
    assert len(state) == 19
    assert state["a/3"] == {"cursor": 33}
    assert "a/4" not in state
    assert "b/1" not in state
    everything = await load_state(kafka_settings)
    assert everything["b/1"] == [1, 2]

    partitions = await state_partitions(kafka_settings)
    assert partitions == list(range(kafka_settings.partitions))
    split = [await load_state(kafka_settings, partitions=[p]) for p in partitions]
    assert sum(len(part) for part in split) == len(everything)
    merged = {k: v for part in split for k, v in part.items()}
    assert merged == everything
