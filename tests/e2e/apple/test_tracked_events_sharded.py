"""Tracked events registered on one instance are reconciled by whichever instance owns their
state-topic partition: the registration is not only in the memory of the instance that took it."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from adapters.apple.reconcile import state_key
from adapters.apple.syncstate import partition_of
from broker.app.config import BrokerSettings
from broker.topics import create_topics
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    TENANT,
    Record,
    apple_adapter,
    events_of,
    read_until,
    running_broker,
    track,
)
from tests.e2e.apple.sync_helpers import eventually, sync_apple_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 12


async def test_registrations_on_one_instance_are_reconciled_by_the_owners(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    kafka = broker_settings.kafka
    await create_topics(kafka)
    timing = {"reconcile_after_s": 1.0, "status_poll_interval_s": 0.5}
    apple_a = sync_apple_settings(sim, instance_id="a")
    apple_b = sync_apple_settings(sim, instance_id="b")
    apple_a = apple_a.model_copy(update=timing)
    apple_b = apple_b.model_copy(update=timing)
    async with (
        running_broker(broker_settings, apple_a) as a,
        running_broker(broker_settings, apple_b) as b,
    ):
        shard_a, shard_b = apple_adapter(a).shard, apple_adapter(b).shard

        async def split() -> bool:
            return (
                bool(shard_a.loaded)
                and bool(shard_b.loaded)
                and len(shard_a.loaded | shard_b.loaded) == kafka.partitions
            )

        await eventually(split, 60, "both instances own state partitions")
        async with AppleApiClient(apple_a, SecretStr(sim.default.s_token)) as client:
            ids = [
                (await client.manage_users("create", [{"clientUserId": f"t-{i}"}]))["eventId"]
                for i in range(EVENTS)
            ]
        assert (await track(b, ids)).status == 202
        owned_by_a = {
            i for i in ids if partition_of(state_key(TENANT, i), kafka.partitions) in shard_a.loaded
        }
        assert owned_by_a, "no registration landed in a partition of the other instance"
        status_ids = {f"status:{i}:COMPLETE" for i in ids}

        def all_reconciled(records: list[Record]) -> bool:
            return status_ids <= {e.id for e in events_of(records)}

        records = await read_until(kafka.bootstrap_servers, kafka.events_topic, all_reconciled)
    assert status_ids <= {e.id for e in events_of(records)}
    # Every registration went to b; a polled the status of those in its partitions.
    agents = {call.user_agent for call in sim.api_calls if call.path.endswith("/status")}
    assert "mdm-notification-broker/a" in agents
