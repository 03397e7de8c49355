"""Shared helpers of the Android tests: keys, settings, an instrumented publisher, Kafka read-back."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from adapters.android.settings import AndroidSettings
from broker.consumer import ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.events import CanonicalEvent, decode_event
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.android.auth import AuthState
from simulators.android.keys import generate_service_account, write_service_account
from simulators.android.runner import SimulatorServer
from simulators.android.server import EmmSimulator, SimulatorConfig


def new_key_file(path: Path, email: str = "broker@sim-project.iam.gserviceaccount.com") -> str:
    """Write a fresh service-account key to ``path``; returns its public key PEM."""
    doc, public_pem = generate_service_account(client_email=email)
    write_service_account(path, doc)
    return public_pem


def simulator_with_key(
    key_path: Path, config: SimulatorConfig | None = None, **auth: Any
) -> EmmSimulator:
    """A simulator that accepts the (new) key written to ``key_path``."""
    public_pem = new_key_file(key_path)
    state = AuthState(**auth)
    state.accounts["broker@sim-project.iam.gserviceaccount.com"] = [public_pem]
    return EmmSimulator(config or SimulatorConfig(), state)


def android_settings(server: SimulatorServer, key_path: Path, **overrides: Any) -> AndroidSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "service_account_file": key_path,
        "token_url": server.token_url,
        "api_base_url": server.api_base_url,
        "pullers": 4,
        "pull_timeout_s": 10.0,
        "api_timeout_s": 3.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
    }
    values.update(overrides)
    return AndroidSettings(**values)


class RecordingPublisher(KafkaPublisher):
    """The real publisher, also recording when Kafka acked each event id (time.monotonic())."""

    def __init__(
        self, settings: KafkaSettings, health: KafkaHealth, metrics: BrokerMetrics
    ) -> None:
        super().__init__(settings, health, metrics)
        self.acked_at: dict[str, float] = {}
        self.gate = asyncio.Event()  # cleared: publish() calls wait here (sets held "in hand")
        self.gate.set()
        self.waiting = 0

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        if not self.gate.is_set():
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        await super().publish(events)
        done = time.monotonic()
        for event in events:
            self.acked_at.setdefault(event.id, done)


async def read_events(
    bootstrap: str, topic: str, expected_distinct: int, timeout_s: float = 60.0
) -> list[CanonicalEvent]:
    """Read ``topic`` from the start until ``expected_distinct`` distinct ids or ``timeout_s``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"android-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[CanonicalEvent] = []
    ids: set[str] = set()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(ids) < expected_distinct and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event = decode_event(record.value)
                    events.append(event)
                    ids.add(event.id)
    finally:
        await consumer.stop()
    return events


async def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout_s``; returns its last value (tests only)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())


async def handled_by_idempotent_consumer(
    kafka_settings: KafkaSettings, bootstrap: str, distinct: int, records: int
) -> collections.Counter[str]:
    """Run :class:`IdempotentConsumer` over the events topic until it handled ``distinct`` ids and
    skipped the other ``records - distinct`` as duplicates; returns how often each id was handled."""
    handled: collections.Counter[str] = collections.Counter()

    async def handler(event: CanonicalEvent, tx: None) -> None:
        handled[event.id] += 1

    group = f"{kafka_settings.events_topic}-consumer"
    registry = CollectorRegistry()
    await create_topics(
        kafka_settings.model_copy(
            update={"events_topic": f"{kafka_settings.events_topic}.{group}.dlq"}
        )
    )
    consumer = IdempotentConsumer(
        ConsumerSettings(
            bootstrap_servers=bootstrap, topic=kafka_settings.events_topic, group_id=group
        ),
        InMemoryStore(),
        handler,
        registry=registry,
    )

    def skipped() -> float:
        value = registry.get_sample_value(
            "mdm_broker_consumer_duplicates_skipped_total", {"group": group}
        )
        return value or 0.0

    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run_until(stop))
    try:
        assert await wait_until(
            lambda: len(handled) >= distinct and skipped() >= records - distinct, 60
        )
    finally:
        stop.set()
        await task
    return handled
