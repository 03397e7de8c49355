"""BrokerApp's lifecycle against a real Kafka: ``async with``, idempotent start/stop, a failed
start (HTTP port taken) stops the publisher and the adapters it had started, no restart (the
error says a new app is needed). The publisher's own: a stop() during start() waits for it and
leaves nothing running."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.adapter import Adapter, AdapterContext
from broker.app.config import BrokerSettings
from broker.app.runtime import BrokerApp
from broker.devtools.examples import example_events
from broker.errors import ConfigError, NotStartedError
from broker.events import EventType
from broker.health import KafkaHealth
from broker.lifecycle import LifecycleState
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics

pytestmark = pytest.mark.kafka


@dataclass
class RecordingAdapter:
    name: str = "recording"
    calls: list[str] = field(default_factory=list)

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self, timeout_s: float) -> None:
        self.calls.append("stop")

    def ready(self) -> bool:
        return True


def _app(settings: BrokerSettings, adapter: RecordingAdapter) -> BrokerApp:
    def factory(ctx: AdapterContext) -> Adapter:
        return adapter

    return BrokerApp(settings, CollectorRegistry(), [factory], topic_needs=[])


async def test_async_with_starts_once_and_stops_once(broker_settings: BrokerSettings) -> None:
    await create_topics(broker_settings.kafka)
    adapter = RecordingAdapter()
    async with _app(broker_settings, adapter) as app:
        assert app.lifecycle.state is LifecycleState.RUNNING
        await app.start()  # idempotent
    report = await app.stop()  # idempotent, same report
    assert report.complete
    assert adapter.calls == ["start", "stop"]
    with pytest.raises(NotStartedError, match="BrokerApp was stopped"):
        await app.start()


async def test_a_failed_start_stops_what_it_started(broker_settings: BrokerSettings) -> None:
    await create_topics(broker_settings.kafka)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = broker_settings.model_copy(
            update={"http": broker_settings.http.model_copy(update={"port": port})}
        )
        adapter = RecordingAdapter()
        app = _app(settings, adapter)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} .*in use"):
            await app.start()
    assert adapter.calls == ["start", "stop"]  # started before the HTTP port, then undone
    assert app.lifecycle.state is LifecycleState.STOPPED
    event = example_events()[EventType.USER_CREATED]
    with pytest.raises(NotStartedError):  # the publisher was stopped too
        await app.publisher.publish([event])
    with pytest.raises(NotStartedError, match=r"BrokerApp start failed .*create a new one"):
        await app.start()


async def test_a_publisher_stop_during_its_start_waits_and_leaves_nothing_running(
    kafka_settings: KafkaSettings,
) -> None:
    """Before the publisher used :class:`broker.lifecycle.Lifecycle`, a stop() that came while
    start() was connecting returned at once and start() then marked the publisher started: its
    producer and health probe ran on, unclosed."""
    await create_topics(kafka_settings)
    publisher = KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics())
    starting = asyncio.create_task(publisher.start())
    await asyncio.sleep(0)  # start() is connecting
    report = await publisher.stop()
    await starting
    assert report.complete
    assert publisher.lifecycle.state is LifecycleState.STOPPED
    with pytest.raises(NotStartedError):
        await publisher.publish([example_events()[EventType.USER_CREATED]])
