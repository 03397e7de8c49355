"""Shared fixtures, defined once: the session's real Kafka and PostgreSQL, a Kafka of a test's
own for outage tests, unique topic names, settings and hygiene."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from broker.app.config import BrokerSettings
from broker.devtools.devkafka import KafkaCluster
from broker.settings import KafkaSettings
from tests.kafka_fixture import session_kafka
from tests.postgres_fixture import fresh_database, postgres_server


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker shared by the whole session."""
    with session_kafka() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """A real PostgreSQL server shared by the session (started on first use)."""
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
async def postgres_dsn(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a fresh, empty database on the session's PostgreSQL."""
    async with fresh_database(postgres_admin_dsn) as dsn:
        yield dsn


@pytest.fixture
def own_kafka() -> Iterator[KafkaCluster]:
    """A single-node Kafka of the test's own, for outage tests that stop, kill or restart it
    (from async tests through ``asyncio.to_thread``: the calls block until the node is down/up)."""
    with KafkaCluster(nodes=1) as cluster:
        yield cluster


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so every test writes to topics no other test reads."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    """Kafka settings with per-test topic names and short bounds suited to tests."""
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        events_topic=f"{topic_prefix}.events",
        dlq_topic=f"{topic_prefix}.events.dlq",
        state_topic=f"{topic_prefix}.state",
        partitions=3,
        publish_timeout_s=10.0,
        request_timeout_s=10.0,
        health_probe_interval_s=0.5,
    )


@pytest.fixture
def broker_settings(kafka_settings: KafkaSettings) -> BrokerSettings:
    return BrokerSettings(kafka=kafka_settings, http={"host": "127.0.0.1", "port": 0})


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Attribute ResourceWarnings (unclosed publishers, sessions) to the test that leaked them."""
    yield
    gc.collect()
