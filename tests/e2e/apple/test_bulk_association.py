"""25 apps x 1,000 devices through simulator -> broker -> Kafka, with duplicates and reordering."""

from __future__ import annotations

from collections import Counter

import pytest

from broker.app.config import BrokerSettings
from broker.events import EventType
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    Record,
    apple_settings,
    control,
    dedupe,
    events_of,
    read_until,
    running_broker,
    sample,
    subscribe,
    track,
    wait_idle,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_every_one_of_25000_assignments_reaches_kafka(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    await control(sim, "POST", "/_sim/faults", {"duplicate_rate": 0.2, "reorder": True}, expect=200)
    # The broker's own short dedupe window is off, so Apple's duplicates really reach Kafka and
    # the idempotency key is what removes them.
    async with running_broker(broker_settings, apple_settings(sim, dedupe_window=0)) as app:
        await subscribe(sim, app)
        bulk = await control(
            sim, "POST", "/_sim/bulk-associate", {"assets": 25, "devices": 1000}, expect=202
        )
        event_id = bulk["eventId"]
        assert (await track(app, [event_id])).status == 202
        expected = {
            (a["adamId"], serial) for a in bulk["assets"] for serial in bulk["serialNumbers"]
        }
        assert len(expected) == 25_000
        await wait_idle(sim)

        def complete(records: list[Record]) -> bool:
            kept = dedupe(events_of(records)).values()
            got = {
                (a["adam_id"], a["serial_number"])
                for e in kept
                if e.type is EventType.ASSIGNMENT_ASSOCIATED
                for a in e.data["assignments"]
            }
            status_seen = any(e.type is EventType.APPLE_EVENT_STATUS for e in kept)
            return got >= expected and status_seen

        kafka = app.settings.kafka
        records = await read_until(kafka.bootstrap_servers, kafka.events_topic, complete, 90.0)
        published = sample(
            app,
            "mdm_broker_events_published_total",
            vendor="apple",
            type="mdm.assignment.associated",
        )

    deliveries = (await control(sim, "GET", "/_sim/deliveries"))["deliveries"]
    management = [d for d in deliveries if d["notificationType"] == "ASSET_MANAGEMENT"]
    assert len(management) == 250  # 25 x 1,000 in chunks of at most 100
    assert all(d["outcome"] == "delivered" for d in management)
    assert sum(len(d["duplicates"]) for d in management) > 0

    events = events_of(records)
    counts = Counter(e.id for e in events)
    duplicated = [i for i, n in counts.items() if n > 1]
    assert duplicated, "the simulator's duplicates should have reached Kafka"
    for dup_id in duplicated:
        copies = [e for e in events if e.id == dup_id]
        assert len({(e.source, e.id) for e in copies}) == 1
        assert all(c.data["raw"] == copies[0].data["raw"] for c in copies)
        assert all(c.partitionkey == copies[0].partitionkey for c in copies)
    assert published == len([e for e in events if e.type is EventType.ASSIGNMENT_ASSOCIATED])

    kept = dedupe(events)
    associated = [e for e in kept.values() if e.type is EventType.ASSIGNMENT_ASSOCIATED]
    assert {d["notificationId"] for d in management} == {e.id for e in associated}
    pairs = [(a["adam_id"], a["serial_number"]) for e in associated for a in e.data["assignments"]]
    assert len(pairs) == 25_000  # after dedupe by (source, id): none missing, none twice
    assert set(pairs) == expected
    assert all(len(e.data["assignments"]) <= 100 for e in associated)
    assert all(e.data["event_id"] == event_id and e.data["result"] == "SUCCESS" for e in associated)

    (status,) = [e for e in kept.values() if e.type is EventType.APPLE_EVENT_STATUS]
    assert status.id == f"status:{event_id}:COMPLETE"
    assert status.data["num_completed"] == status.data["num_requested"] == 25_000
