"""Broker stopped while Apple changes things and drops every delivery after 3 attempts: after the
restart every change is in Kafka as a synced event; a second sync publishes no new id."""

from __future__ import annotations

import pytest

from broker.app.config import BrokerSettings
from broker.topics import create_topics
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    TENANT,
    apple_adapter,
    control,
    running_broker,
    subscribe,
    wait_idle,
)
from tests.e2e.apple.sync_helpers import (
    check_synced,
    create_users,
    perform_changes,
    read_all,
    sync_apple_settings,
    wait_sync,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_changes_while_broker_down_arrive_as_synced_events(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    kafka = broker_settings.kafka
    await create_topics(kafka)
    apple = sync_apple_settings(sim)
    async with running_broker(broker_settings, apple) as app:
        await subscribe(sim, app)
        users = await create_users(sim, 20)
        await wait_idle(sim)
        await wait_sync(app, "initial")
        port = app.port or 0
    # Broker down: Apple changes things; its deliveries fail 3 times and are dropped.
    before = (await control(sim, "GET", "/_sim/deliveries"))["summary"].get("dropped", 0)
    done = await perform_changes(sim, users)
    await wait_idle(sim)
    summary = (await control(sim, "GET", "/_sim/deliveries"))["summary"]
    assert summary["dropped"] - before == 2 + 20 + 5  # 2 chunks of 100 assignments

    async with running_broker(broker_settings, apple, port=port) as app:
        report = await wait_sync(app, "restart")
        assert report.records["assignments"] >= 200
        events = await read_all(kafka.bootstrap_servers, kafka.events_topic)
        check_synced(events, sim, done)
        published = {e.id for e in events}

        again = await apple_adapter(app).sync.sync_now(TENANT)
        assert again.events, "the asset counts are read again"
        assert set(again.events) <= published, "a repeated sync published a new id"
        assert again.requests <= 3, again.requests

    after = {e.id for e in await read_all(kafka.bootstrap_servers, kafka.events_topic)}
    after = {i for i in after if i.startswith("sync:")}
    assert after <= published
