"""A notification the simulator dropped after its 3 attempts is recovered through event status
reconciliation, and event tracking survives a broker restart (state topic)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from adapters.apple.reconcile import STATE_PREFIX
from broker.app.config import BrokerSettings
from broker.events import EventType
from broker.state import load_state
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    apple_settings,
    control,
    events_of,
    has_id,
    read_until,
    running_broker,
    sample,
    subscribe,
    track,
    wait_idle,
)

pytestmark = pytest.mark.kafka


async def test_dropped_notification_is_recovered_after_restart(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    # Apple processes the association after 3 s; by then the broker is down.
    await control(sim, "POST", "/_sim/faults", {"processing_delay_s": 3.0}, expect=200)
    await control(sim, "POST", "/_sim/assets", {"adamId": "555", "count": 10}, expect=202)
    apple = apple_settings(sim, reconcile_after_s=1.0, status_poll_interval_s=0.5)
    serials = [f"SER{i:03d}" for i in range(10)]
    async with running_broker(broker_settings, apple) as first:
        port = first.port
        await subscribe(sim, first)
        async with AppleApiClient(apple, SecretStr(sim.default.s_token)) as client:
            answer = await client.associate(
                [{"adamId": "555", "pricingParam": "STDQ"}], serial_numbers=serials
            )
        event_id = answer["eventId"]
        assert (await track(first, [event_id])).status == 202  # stored in the state topic

    await wait_idle(sim)
    deliveries = (await control(sim, "GET", "/_sim/deliveries"))["deliveries"]
    (lost,) = [d for d in deliveries if d["eventId"] == event_id]
    assert lost["outcome"] == "dropped"
    assert len(lost["attempts"]) == 3
    assert all(a.startswith("error:") for a in lost["attempts"])

    assert port is not None
    async with running_broker(broker_settings, apple, port=port) as second:
        # The restarted broker's owner of the registration's state partition loads it from the
        # state topic (asynchronously, after joining the group); the status event below proves it.
        kafka = second.settings.kafka
        status_id = f"status:{event_id}:COMPLETE"
        records = await read_until(kafka.bootstrap_servers, kafka.events_topic, has_id(status_id))
        remaining = sample(second, "mdm_broker_apple_tracked_events")

    events = events_of(records)
    (status,) = [e for e in events if e.id == status_id]
    assert status.type is EventType.APPLE_EVENT_STATUS
    assert status.subject == event_id
    assert status.source == f"/apple/locations/{sim.default.uid}"
    assert status.data["event_status"] == "COMPLETE"
    assert status.data["event_type"] == "ASSOCIATE"
    assert status.data["num_completed"] == status.data["num_requested"] == 10
    # The ASSET_MANAGEMENT notification itself never reached the broker.
    assert not [e for e in events if e.data.get("event_id") == event_id and e.id != status_id]
    assert remaining == 0
    assert await load_state(broker_settings.kafka, STATE_PREFIX, timeout_s=30.0) == {}
