"""Reading the dead-letter topic with filters (real Kafka); nothing is consumed or committed."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from broker.app.cli import main
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


def test_truncated_letters_are_pointed_out_by_list_show_and_replay(
    kafka_settings: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = kafka_settings.model_copy(update={"max_request_bytes": 100_000})
    payload = b'{"notificationId": "n1", "x": "' + b"a" * 200_000 + b'"}'
    digest = hashlib.sha256(payload).hexdigest()

    async def write() -> None:
        await create_topics(settings)
        async with KafkaPublisher(settings, KafkaHealth(), BrokerMetrics()) as publisher:
            await publisher.dead_letter(payload, vendor="apple", reason="schema", tenant="t1")

    asyncio.run(write())
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{settings.bootstrap_servers}"\n'
        f'events_topic = "{settings.events_topic}"\ndlq_topic = "{settings.dlq_topic}"\n'
        f'state_topic = "{settings.state_topic}"\n'
    )

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--config", str(config)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = run("dlq", "list")
    assert code == 0
    assert f"(truncated from {len(payload)}B: not replayable)" in out
    code, out, _ = run("dlq", "list", "--json")
    listed = orjson.loads(out)
    assert (listed["truncated"], listed["original_bytes"]) == (True, len(payload))
    assert listed["original_sha256"] == digest
    code, out, _ = run("dlq", "show", "0:0")
    assert code == 0
    assert f"NOTE: truncated, stored {listed['bytes']} of {len(payload)} bytes" in out
    assert f"original sha256 {digest}: the payload below is incomplete" in out
    code, out, err = run("dlq", "replay")
    assert code == 1  # not replayed
    assert out.split()[:2] == ["0:0", "truncated"]
    assert "1 truncated letter(s) cannot be replayed" in err
    assert f"0:0 apple stored {listed['bytes']} of {len(payload)} bytes, " in err
    assert f"original sha256 {digest}" in err
