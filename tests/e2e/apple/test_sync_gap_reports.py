"""Gap reports are tombstoned once a sync covered them (real Kafka): the owner writes a tombstone
for the report's key, the state topic holds it after the report, and the state a new owner loads
no longer has the key; a report of a later failure opens a gap again."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from adapters.apple.syncstate import GapReport, gap_key, partition_of, sync_key
from broker.app.config import BrokerSettings
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.state import StateWriter, load_state, state_partitions
from broker.topics import create_topics
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import TENANT, apple_adapter, running_broker, wait_idle
from tests.e2e.apple.sync_helpers import create_users, eventually, sync_apple_settings, wait_sync
from tests.integration.kapua.helpers import read_topic_raw

pytestmark = [pytest.mark.kafka]


async def test_a_covered_gap_report_is_tombstoned_and_gone_after_compaction_semantics(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    kafka = broker_settings.kafka
    await create_topics(kafka)
    await create_users(sim, 2)
    await wait_idle(sim)
    partitions = len(await state_partitions(kafka))
    key = gap_key(TENANT, "other-instance", partitions)
    async with running_broker(broker_settings, sync_apple_settings(sim)) as app:
        await wait_sync(app, "initial")
        scheduler = apple_adapter(app).sync
        # Another instance's webhook answered Apple 503 just now (after the initial sync began).
        now = time.time()
        report = GapReport(TENANT, "other-instance", now - 0.5, now)
        async with KafkaPublisher(kafka, KafkaHealth(), BrokerMetrics()) as publisher:
            await StateWriter(publisher).put(key, report.to_value())
        await wait_sync(app, "gap")  # the owner synced the gap once the retry horizon passed

        await eventually(_values(kafka, key, [True, False]), 30, "a tombstone after the report")
        assert scheduler.records[TENANT].gap is None
        state = await load_state(kafka, prefix="apple/")
        assert key not in state  # what a new owner loads: the report is gone
        assert state[sync_key(TENANT)]["gap"] is None

        # A later failure reported under the same key opens a gap again: synced, tombstoned.
        later = GapReport(TENANT, "other-instance", now - 0.5, time.time())
        async with KafkaPublisher(kafka, KafkaHealth(), BrokerMetrics()) as publisher:
            await StateWriter(publisher).put(key, later.to_value())

        async def second_gap_sync() -> bool:
            return sum(r.reason == "gap" for r in scheduler.reports) == 2

        await eventually(second_gap_sync, 30, "a second gap sync")
        shape = [True, False, True, False]
        await eventually(_values(kafka, key, shape), 30, "the second report tombstoned too")
    assert partition_of(key, partitions) == partition_of(sync_key(TENANT), partitions)


def _values(kafka: KafkaSettings, key: str, shape: list[bool]) -> Callable[[], Awaitable[bool]]:
    """A check: the state topic holds, for ``key``, values (True) and tombstones (False) in
    this order."""

    async def check() -> bool:
        records = await read_topic_raw(kafka.bootstrap_servers, kafka.state_topic)
        values = [v for _, _, k, v in sorted(records, key=lambda r: r[1]) if k == key.encode()]
        return [v is not None for v in values] == shape

    return check
