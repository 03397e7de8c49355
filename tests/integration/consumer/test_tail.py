"""``mdm-broker tail`` against a real Kafka: filters, formats, bounds, and the CLI entry."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

import orjson
import pytest

from broker.app.tail import TailOptions, tail
from broker.events import EventType, Vendor, decode_event
from broker.settings import KafkaSettings
from tests.integration.consumer.helpers import create_topics, produce, records_of, sample_event

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[3]


async def _publish_mix(bootstrap: str, topic: str) -> None:
    await create_topics(bootstrap, {topic: 2})
    events = [
        sample_event(1, vendor=Vendor.APPLE, tenant="uid-1"),
        sample_event(2, vendor=Vendor.ANDROID, tenant="ent-1", type=EventType.UNKNOWN),
        sample_event(3, vendor=Vendor.KAPUA, tenant="scope-1"),
        sample_event(4, vendor=Vendor.ANDROID, tenant="ent-2"),
        sample_event(5, vendor=Vendor.ANDROID, tenant="ent-1"),
    ]
    await produce(bootstrap, topic, [*records_of(events), (b"x", b"garbage")])


async def test_filters_and_pretty_output(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.events"
    await _publish_mix(kafka_bootstrap, topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic)
    out, err = io.StringIO(), io.StringIO()
    options = TailOptions(
        vendors=frozenset({"android"}),
        tenants=frozenset({"ent-1"}),
        from_beginning=True,
        idle_timeout_s=3.0,
    )
    printed = await tail(settings, options, out=out, err=err)
    lines = out.getvalue().splitlines()
    assert printed == 2
    assert sorted(line.split("id=")[1].split()[0] for line in lines) == ["e2", "e5"]
    assert all(" android " in line and "tenant=ent-1" in line for line in lines)
    assert "skipping record" in err.getvalue()  # the garbage record is reported, not printed

    out = io.StringIO()
    by_type = TailOptions(types=frozenset({"mdm.unknown"}), from_beginning=True, max_events=1)
    assert await tail(settings, by_type, out=out, err=io.StringIO()) == 1
    assert "mdm.unknown" in out.getvalue()


async def test_without_from_beginning_old_events_are_not_shown(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    await _publish_mix(kafka_bootstrap, topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic)
    out = io.StringIO()
    printed = await tail(settings, TailOptions(idle_timeout_s=1.5), out=out, err=io.StringIO())
    assert printed == 0
    assert out.getvalue() == ""


async def test_cli_json_output_is_canonical(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.events"
    await _publish_mix(kafka_bootstrap, topic)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.app.cli", "tail", "--bootstrap-servers", kafka_bootstrap,
        "--topic", topic, "--from-beginning", "--json", "--vendor", "android", "--max-events", "3",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert len(lines) == 3
    events = [decode_event(line) for line in lines]
    assert {e.vendor for e in events} == {Vendor.ANDROID}
    assert all(orjson.loads(line)["specversion"] == "1.0" for line in lines)


def test_cli_rejects_bad_bounds() -> None:
    from broker.app.cli import main

    assert main(["tail", "--max-events", "0"]) == 2
