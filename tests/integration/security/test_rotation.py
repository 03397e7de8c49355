"""SCRAM password rotation: changed on Kafka, new value given through the environment, broker
restarted: it resumes and nothing acked before, during or after the rotation is lost.

aiokafka cannot change SCRAM credentials (no AlterUserScramCredentials), so the launcher runs the
Java Admin API for it (KafkaCluster.set_scram_password).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from broker.app.config import BrokerSettings, load_settings
from broker.app.runtime import BrokerApp
from broker.app.tail import TailOptions, tail
from broker.devtools.devkafka import KafkaCluster
from broker.devtools.examples import example_events
from broker.events import CanonicalEvent, EventType, decode_event
from broker.kafka_check import run_checks
from broker.topics import create_topics
from tests.integration.security.helpers import USERS

pytestmark = [pytest.mark.kafka]

NEW_PASSWORD = "rotating-secret-v2"


def _events(tag: str, count: int) -> list[CanonicalEvent]:
    base = example_events()[EventType.ASSET_COUNT_CHANGED]
    return [base.model_copy(update={"id": f"{tag}-{i}"}) for i in range(count)]


def _config(path: Path, cluster: KafkaCluster, prefix: str) -> Path:
    """Everything but the password, as an operator's TOML file would have it."""
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{cluster.bootstrap_servers}"
events_topic = "{prefix}.events"
dlq_topic = "{prefix}.events.dlq"
state_topic = "{prefix}.state"
partitions = 2
publish_timeout_s = 5.0
request_timeout_s = 5.0
health_probe_interval_s = 0.3
[kafka.security]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "rotating"
ssl_ca_file = "{cluster.pki.ca.ca_file}"
ssl_use_system_ca = false
[http]
host = "127.0.0.1"
port = 0
"""
    )
    return path


async def _publish(settings: BrokerSettings, events: list[CanonicalEvent]) -> BrokerApp:
    app = BrokerApp(settings, factories=[])
    await app.start()
    assert app.health.healthy, app.health.reason
    await app.publisher.publish(events)
    return app


async def test_scram_rotation_with_restart_resumes_and_loses_nothing(
    secure_kafka: KafkaCluster,
    tmp_path: Path,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _config(tmp_path / "broker.toml", secure_kafka, topic_prefix)
    password_env = "MDM_BROKER_KAFKA__SECURITY__SASL_PASSWORD"
    monkeypatch.setenv(password_env, USERS["rotating"])
    old = load_settings(config)
    await create_topics(old.kafka)
    before, during, after = _events("before", 20), _events("during", 20), _events("after", 20)

    app = await _publish(old, before)
    try:
        await asyncio.to_thread(secure_kafka.set_scram_password, "rotating", NEW_PASSWORD)
        # Connections authenticated before the change stay up until the restart.
        await app.publisher.publish(during)
    finally:
        await app.stop()

    refused = await run_checks(old.kafka)  # the old password no longer logs in
    assert [(r.check, r.result) for r in refused] == [("connect + authenticate", "FAILED")]
    assert "sasl_password" in refused[0].detail

    monkeypatch.setenv(password_env, NEW_PASSWORD)
    new = load_settings(config)
    app = await _publish(new, after)
    await app.stop()

    out = io.StringIO()
    expected = before + during + after
    async with asyncio.timeout(60):
        printed = await tail(
            new.kafka,
            TailOptions(json_output=True, from_beginning=True, max_events=len(expected)),
            out=out,
            err=io.StringIO(),
        )
    assert printed == len(expected)
    read = {decode_event(line.encode()).id for line in out.getvalue().splitlines()}
    assert read == {e.id for e in expected}
