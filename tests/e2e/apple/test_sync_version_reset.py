"""Apple refuses the stored sinceVersionId (9721): the data set is read whole, and an idempotent
consumer sees no record state twice (unchanged records keep their ids)."""

from __future__ import annotations

import pytest

from broker.app.config import BrokerSettings
from broker.events import EventType
from broker.topics import create_topics
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    TENANT,
    apple_adapter,
    control,
    dedupe,
    running_broker,
    subscribe,
    wait_idle,
)
from tests.e2e.apple.sync_helpers import create_users, read_all, sync_apple_settings, wait_owned

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_stale_version_falls_back_to_full_read_without_duplicates(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    kafka = broker_settings.kafka
    await create_topics(kafka)
    apple = sync_apple_settings(sim, initial_sync=False)
    async with running_broker(broker_settings, apple) as app:
        scheduler = apple_adapter(app).sync
        await wait_owned(app)
        await subscribe(sim, app)
        await create_users(sim, 20)
        await wait_idle(sim)
        initial = await scheduler.sync_now(TENANT, "manual")  # baseline after the users exist
        assert initial.records["users"] == 20
        await control(sim, "POST", "/_sim/bulk-associate", {"assets": 2, "devices": 10}, expect=202)
        await wait_idle(sim)
        uid = sim.default.uid
        await control(sim, "POST", f"/_sim/locations/{uid}/expire-versions", {}, expect=200)

        reset = await scheduler.sync_now(TENANT)
        assert reset.full_reads == ["assignments", "users"]
        assert reset.records["assignments"] == 20
        assert reset.records["users"] == 20
        again = await scheduler.sync_now(TENANT)
        assert again.full_reads == []
        assert again.records.get("assignments") == 0
        assert again.records.get("users") == 0
    # The full re-read repeats the users' ids (unchanged since the first full read).
    assert {i for i in reset.events if i.startswith("sync:users:")} == {
        i for i in initial.events if i.startswith("sync:users:")
    }
    events = await read_all(kafka.bootstrap_servers, kafka.events_topic)
    kept = dedupe([e for e in events if e.id.startswith("sync:")])
    users = [e for e in kept.values() if e.type is EventType.USER_SYNCED]
    assignments = [e for e in kept.values() if e.type is EventType.ASSIGNMENT_SYNCED]
    # Unchanged users re-read whole have the ids of their first read: the consumer skips them.
    assert len(users) == 20
    assert {e.data["sync"]["reason"] for e in users} == {"manual"}
    assert len(assignments) == 20
    assert {e.data["sync"]["reason"] for e in assignments} == {"version_reset"}
    assert set(again.events) <= {e.id for e in events}
