"""Reading the dead-letter topic with filters (real Kafka); nothing is consumed or committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.dlq import DlqFilter, parse_time, read_dead_letters
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics

pytestmark = pytest.mark.kafka


async def test_filters_by_vendor_reason_tenant_and_time(kafka_settings: KafkaSettings) -> None:
    assert await read_dead_letters(kafka_settings, DlqFilter()) == []  # no DLQ topic yet
    await create_topics(kafka_settings)
    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        await publisher.dead_letter(b"a", vendor="apple", reason="schema", tenant="t1")
        await publisher.dead_letter(b"b", vendor="android", reason="schema", tenant="e1")
        await publisher.dead_letter(b"c", vendor="android", reason="malformed", tenant="e2")
    everything = await read_dead_letters(kafka_settings, DlqFilter())
    assert [letter.payload for letter in everything] == [b"a", b"b", b"c"]
    assert [letter.ref for letter in everything] == ["0:0", "0:1", "0:2"]
    android = DlqFilter(vendors=frozenset({"android"}))
    assert [x.payload for x in await read_dead_letters(kafka_settings, android)] == [b"b", b"c"]
    schema = DlqFilter(reasons=frozenset({"schema"}), tenants=frozenset({"e1"}))
    assert [x.payload for x in await read_dead_letters(kafka_settings, schema)] == [b"b"]
    future = DlqFilter(since=datetime.now(UTC) + timedelta(minutes=5))
    assert await read_dead_letters(kafka_settings, future) == []
    recent = DlqFilter(since=parse_time("10m"), refs=frozenset({"0:2"}))
    assert [x.payload for x in await read_dead_letters(kafka_settings, recent)] == [b"c"]
    assert len(await read_dead_letters(kafka_settings, DlqFilter(), limit=2)) == 2


def test_time_forms() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_time("90s", now) == now - timedelta(seconds=90)
    assert parse_time("7d", now) == now - timedelta(days=7)
    assert parse_time("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_time("2026-12-01T10:00:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="30m"):
        parse_time("yesterday")
