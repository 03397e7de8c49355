"""The simulator's hard cases through the real broker into a real Kafka.

* ``result: FAILURE`` for every Apple action (``POST /_sim/failures``) -> ``mdm.assignment.failed``
  / ``mdm.user.failed`` with ``action``, ``result`` and ``error``; an idempotent consumer (the
  consumer library) that acts on ``mdm.assignment.associated`` sees only the real successes;
* a notification id reused with other content (``POST /_sim/notifications/{id}/reuse``) -> a
  second event under ``{id}~{16 hex}`` with ``idcollision``, handled by the idempotent consumer
  as a distinct event;
* the current doc's newer notification types are accepted by client config and forwarded as
  ``mdm.unknown``.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from broker.app.config import BrokerSettings
from broker.consumer import ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.events import (
    AssignmentFailedData,
    CanonicalEvent,
    EventType,
    UserFailedData,
)
from simulators.apple.server import AppleSimulator
from simulators.apple.world import ASSIGNMENT_ACTIONS, NEWER_NOTIFICATION_TYPES, USER_ACTIONS
from tests.e2e.apple.helpers import (
    TOKEN,
    apple_settings,
    control,
    events_of,
    has_id,
    notification_url,
    read_until,
    running_broker,
    sample,
    wait_idle,
)

pytestmark = pytest.mark.kafka


async def test_failures_collisions_and_newer_types_from_the_simulator(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    async with running_broker(broker_settings, apple_settings(sim)) as app:
        async with AppleApiClient(apple_settings(sim), SecretStr(sim.default.s_token)) as client:
            config = await client.set_client_config(
                notification_types=[
                    "ASSET_MANAGEMENT",
                    "USER_MANAGEMENT",
                    "USER_ASSOCIATED",
                    "ASSET_COUNT",
                    *NEWER_NOTIFICATION_TYPES,
                ],
                notification_url=notification_url(app),
                notification_auth_token=SecretStr(TOKEN),
            )
        assert set(NEWER_NOTIFICATION_TYPES) <= set(config["subscribedNotificationTypes"])

        # A real success first: 1 asset associated with 2 new devices.
        bulk = await control(
            sim, "POST", "/_sim/bulk-associate", {"assets": 1, "devices": 2}, expect=202
        )
        await wait_idle(sim)
        failed_events = {}
        for action in ASSIGNMENT_ACTIONS + USER_ACTIONS:
            doc = await control(sim, "POST", "/_sim/failures", {"type": action}, expect=202)
            failed_events[doc["eventId"]] = action
        # A FAILURE for an existing event: the successful associate's id, as Apple may do it.
        late = await control(
            sim, "POST", "/_sim/failures", {"eventId": bulk["eventId"]}, expect=202
        )
        bought = await control(
            sim, "POST", "/_sim/assets", {"adamId": "408709785", "count": 12}, expect=202
        )
        await wait_idle(sim)
        await control(
            sim, "POST", f"/_sim/notifications/{bought['notificationId']}/reuse", expect=202
        )
        newer = [
            {"notificationType": kind, "notification": {"adamId": "1", "count": 3}}
            for kind in NEWER_NOTIFICATION_TYPES
        ]
        await control(sim, "POST", "/_sim/notifications", {"notifications": newer}, expect=202)
        await wait_idle(sim)
        marker = {
            "notificationType": "ASSET_COUNT",
            "notificationId": "marker-sim-cases",
            "notification": {"adamId": "1", "countDelta": 1},
        }
        await control(sim, "POST", "/_sim/notifications", {"notifications": [marker]}, expect=202)
        kafka = app.settings.kafka
        records = await read_until(
            kafka.bootstrap_servers, kafka.events_topic, has_id("marker-sim-cases")
        )
        collisions = sample(app, "mdm_broker_id_collisions_total", vendor="apple")

    events = events_of(records)
    failures = [e for e in events if e.type in (EventType.ASSIGNMENT_FAILED, EventType.USER_FAILED)]
    actions = {}
    for event in failures:
        data = event.typed_data()
        assert isinstance(data, AssignmentFailedData | UserFailedData)
        assert data.result == "FAILURE"
        assert data.error is not None
        assert data.error.error_number == 9603
        assert data.event_id is not None
        actions[data.event_id] = (event.type, data.action)
    assert actions == {
        **{
            ev: (
                EventType.ASSIGNMENT_FAILED if a in ASSIGNMENT_ACTIONS else EventType.USER_FAILED,
                a,
            )
            for ev, a in failed_events.items()
        },
        late["eventId"]: (EventType.ASSIGNMENT_FAILED, "ASSOCIATE"),
    }

    # The reused id: two events, the second under the derived id, flagged.
    counts = [e for e in events if e.id.startswith(bought["notificationId"])]
    assert [e.idcollision for e in counts] == [None, bought["notificationId"]]
    assert counts[1].id.startswith(f"{bought['notificationId']}~")
    assert collisions == 1
    unknown = {e.vendortype for e in events if e.type is EventType.UNKNOWN}
    assert unknown == set(NEWER_NOTIFICATION_TYPES)

    # A consumer acting on mdm.assignment.associated (the consumer library) sees no failure.
    associated: list[CanonicalEvent] = []
    handled: list[str] = []
    seen = asyncio.Event()

    async def handle(event: CanonicalEvent, tx: None) -> None:
        handled.append(event.id)
        if event.type is EventType.ASSIGNMENT_ASSOCIATED:
            associated.append(event)
        if event.id == "marker-sim-cases":
            seen.set()

    settings = ConsumerSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic=kafka.events_topic,
        group_id="associations",
        dlq_topic=f"{kafka.events_topic}.associations.dlq",
        poll_timeout_s=0.1,
    )
    consumer: IdempotentConsumer[None] = IdempotentConsumer(
        settings, InMemoryStore(), handle, registry=CollectorRegistry()
    )
    run = asyncio.create_task(consumer.run_until(seen))
    await asyncio.wait_for(run, 60)
    assert [e.data["event_id"] for e in associated] == [bulk["eventId"]]
    assert {e.data["result"] for e in associated} == {"SUCCESS"}
    assert not set(failed_events) & {e.data["event_id"] for e in associated}
    # ... and treats the colliding notification as the distinct event it is.
    assert [i for i in handled if i.startswith(bought["notificationId"])] == [e.id for e in counts]
