"""Unit tests of Apple sync: deterministic ids, state records, gap recording, scheduling, paging."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.apple.client import AppleApiClient
from adapters.apple.gaps import GapRecorder
from adapters.apple.settings import AppleSyncSettings
from adapters.apple.syncevents import id_basis, synced_event, synced_event_id
from adapters.apple.syncmetrics import AppleSyncMetrics
from adapters.apple.syncscheduler import SyncScheduler
from adapters.apple.syncstate import (
    Gap,
    GapReport,
    LocationRecord,
    ManualSync,
    SyncRun,
    gap_key,
    manual_key,
    partition_of,
    sync_key,
    tenant_of_gap_key,
    tenant_of_manual_key,
)
from broker.errors import NormalizationError
from broker.events import EventType, SyncInfo
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.state import StateWriter
from simulators.apple.server import AppleSimulator

ASSIGNMENT = {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": "C02Y402HLCM6"}
INFO = SyncInfo(reason="gap", version_id="v2", started=datetime(2026, 1, 1, tzinfo=UTC))


# -- deterministic ids --------------------------------------------------------------------------


def test_same_record_same_read_same_id_whatever_the_key_order() -> None:
    reordered = dict(reversed(list(ASSIGNMENT.items())))
    basis = id_basis("assignments", "v1", "v2")
    assert synced_event_id("1", "assignments", ASSIGNMENT, basis) == synced_event_id(
        "1", "assignments", reordered, basis
    )


def test_changed_record_location_or_read_changes_the_id() -> None:
    basis = id_basis("assignments", "v1", "v2")
    first = synced_event_id("1", "assignments", ASSIGNMENT, basis)
    other_serial = {**ASSIGNMENT, "serialNumber": "X"}
    assert synced_event_id("1", "assignments", other_serial, basis) != first
    assert synced_event_id("2", "assignments", ASSIGNMENT, basis) != first
    # the same state reported by a later delta (it changed again in between: A -> B -> A)
    assert (
        synced_event_id("1", "assignments", ASSIGNMENT, id_basis("assignments", "v7", "v9"))
        != first
    )


def test_full_reads_repeat_ids_and_asset_ids_follow_the_version() -> None:
    assert id_basis("users", None, "v1") == id_basis("users", None, "v2") == "full"
    assert id_basis("assets", None, "v1") != id_basis("assets", None, "v2")
    assert id_basis("assets", "ignored", "v1") == id_basis("assets", None, "v1")


def test_id_ignores_sync_time_and_reason() -> None:
    later = SyncInfo(reason="safety_net", version_id="v3", started=datetime.now(UTC))
    a = synced_event("1", "assignments", dict(ASSIGNMENT), sync=INFO, basis="full")
    b = synced_event("1", "assignments", dict(ASSIGNMENT), sync=later, basis="full")
    assert a.id == b.id
    assert a.id.startswith("sync:assignments:")
    assert a.type is EventType.ASSIGNMENT_SYNCED
    assert a.subject == "C02Y402HLCM6"
    assert a.partitionkey == "apple:1"
    assert a.data["raw"] == ASSIGNMENT


def test_typed_data_of_each_synced_type() -> None:
    user = {"clientUserId": "u1", "status": "Associated", "idHash": "h", "email": "e"}
    asset = {
        "adamId": "1",
        "pricingParam": "STDQ",
        "assignedCount": 3,
        "availableCount": 7,
        "totalCount": 10,
        "retiredCount": 0,
    }
    u = synced_event("1", "users", user, sync=INFO, basis="full")
    c = synced_event("1", "assets", asset, sync=INFO, basis="version:v2")
    assert u.type is EventType.USER_SYNCED
    assert u.typed_data().model_dump()["status"] == "Associated"
    assert c.type is EventType.ASSET_COUNTS_SYNCED
    assert c.typed_data().model_dump()["total_count"] == 10


@pytest.mark.parametrize(
    ("dataset", "record"),
    [
        ("assignments", {"pricingParam": "STDQ", "serialNumber": "s"}),
        ("assignments", {"adamId": "1", "serialNumber": "s", "clientUserId": "u"}),
        ("users", {"email": "x"}),
        ("assets", {"adamId": 5}),
    ],
)
def test_records_without_identity_are_schema_errors(dataset: Any, record: dict[str, Any]) -> None:
    with pytest.raises(NormalizationError) as err:
        synced_event("1", dataset, record, sync=INFO, basis="full")
    assert err.value.reason == "schema"


# -- state records ------------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_gap_keys_share_the_partition_of_the_location_record(partitions: int) -> None:
    for tenant in ("acme", "beta", "loc-17"):
        key = gap_key(tenant, "host-1", partitions)
        assert partition_of(key, partitions) == partition_of(sync_key(tenant), partitions)
        assert tenant_of_gap_key(key) == tenant
        manual = manual_key(tenant, partitions)
        assert partition_of(manual, partitions) == partition_of(sync_key(tenant), partitions)
        assert tenant_of_manual_key(manual) == tenant


def test_partition_of_matches_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(6))
    for key in ("apple/sync/acme", "x", "apple/gap/acme/h#3"):
        assert partition_of(key, 6) == DefaultPartitioner()(key.encode(), parts, parts)


def test_location_record_round_trip_and_gap_coverage() -> None:
    record = LocationRecord(
        "acme",
        versions={"users": "v1"},
        run=SyncRun("gap", 5.0, ["assignments"]),
        synced_through=10,
    )
    record.add_gap(Gap(1.0, 9.0, "gap"))
    assert record.gap is None  # covered by the sync that started at 10
    record.add_gap(Gap(11.0, 12.0, "gap"))
    record.add_gap(Gap(9.5, 11.5, "restart"))
    assert record.gap == Gap(9.5, 12.0, "restart")
    assert LocationRecord.from_value(record.to_value()) == record
    assert LocationRecord.from_value({"tenant": 3}) is None
    assert LocationRecord.from_value({"tenant": "a", "run": {"reason": "x"}}) is None


# -- gap recorder -------------------------------------------------------------------------------


class _Writer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.puts: list[tuple[str, Any]] = []

    async def put(self, key: str, value: Any) -> None:
        from broker.errors import PublishError

        if self.fail:
            raise PublishError("down")
        self.puts.append((key, value))


async def test_recorder_opens_gaps_only_for_answers_apple_retries() -> None:
    now = [100.0]
    woken: list[str] = []
    rec = GapRecorder("i1", {"acme"}, on_gap=woken.append, clock=lambda: now[0])
    for status in (200, 202, 400, 404, 405):
        rec.note_answer("acme", status)
    rec.note_answer("unknown", 503)
    assert not rec.pending
    rec.note_answer("acme", 503)
    now[0] = 130.0
    rec.note_answer("acme", 401)
    assert woken == ["acme"]
    assert rec.windows()["acme"] == GapReport("acme", "i1", 100.0, 130.0)
    down = _Writer(fail=True)
    assert await rec.flush(down, 3) == 0
    assert rec.pending
    up = _Writer()
    assert await rec.flush(up, 3) == 1
    assert not rec.pending
    ((key, value),) = up.puts
    assert tenant_of_gap_key(key) == "acme"
    assert GapReport.from_value(value) == GapReport("acme", "i1", 100.0, 130.0)


# -- scheduling ---------------------------------------------------------------------------------


def _scheduler(clock: list[float], **sync: Any) -> SyncScheduler:
    values: dict[str, Any] = {"retry_horizon_s": 360, "heartbeat_s": 60}
    values["safety_net_interval_s"] = 3600
    settings = AppleSyncSettings(**{**values, **sync})
    recorder = GapRecorder("i1", {"acme"})
    return SyncScheduler(
        settings,
        {"acme": None},  # type: ignore[dict-item]
        {"acme": "1"},
        None,  # type: ignore[arg-type]
        KafkaHealth(),
        AppleSyncMetrics(BrokerMetrics()),
        recorder,
        "i1",
        clock=lambda: clock[0],
    )


class _NoWrites(StateWriter):
    def __init__(self) -> None:
        self.values: list[Any] = []
        self.deleted: list[str] = []

    async def put(self, key: str, value: Any) -> None:
        self.values.append(value)

    async def delete(self, key: str) -> None:
        self.deleted.append(key)


async def _load(s: SyncScheduler, entries: dict[str, Any]) -> None:
    s.set_partition_count(1)
    s._writer = _NoWrites()
    await s.on_loaded(0, entries)


async def test_new_location_is_synced_at_once_then_by_the_safety_net() -> None:
    clock = [1000.0]
    s = _scheduler(clock)
    await _load(s, {})
    assert s.due("acme") == (0.0, "initial")
    s.records["acme"].synced_through = s.records["acme"].last_sync = 1000.0
    assert s.due("acme") == (4600.0, "safety_net")
    off = _scheduler(clock, safety_net_interval_s=0)
    await _load(off, {sync_key("acme"): {"tenant": "acme", "synced_through": 1, "alive_at": 990}})
    assert off.due("acme") is None


async def test_restart_gap_when_no_broker_was_alive_and_not_after_a_handover() -> None:
    clock = [10_000.0]
    base = {"tenant": "acme", "synced_through": 9e3, "last_sync": 9e3, "versions": {}}
    handover = _scheduler(clock)
    await _load(handover, {sync_key("acme"): {**base, "alive_at": 9_950.0}})
    assert handover.records["acme"].gap is None
    down = _scheduler(clock)
    await _load(down, {sync_key("acme"): {**base, "alive_at": 9_000.0, "stopped_at": 9_100.0}})
    assert down.records["acme"].gap == Gap(9_100.0, 10_000.0, "restart")
    assert down.due("acme") == (10_360.0, "restart")


async def test_reported_gap_is_due_after_the_retry_horizon_and_resumed_runs_first() -> None:
    clock = [10_000.0]
    s = _scheduler(clock)
    base = {"tenant": "acme", "synced_through": 9_990.0, "last_sync": 9_990.0, "alive_at": 9_999}
    report = GapReport("acme", "i2", 9_995.0, 9_998.0).to_value()
    await _load(s, {sync_key("acme"): base, gap_key("acme", "i2", 1): report})
    assert s.due("acme") == (10_358.0, "gap")
    later = GapReport("acme", "i2", 9_995.0, 10_100.0).to_value()
    await s.on_record(0, gap_key("acme", "i2", 1), later)
    assert s.due("acme") == (10_460.0, "gap")
    s.records["acme"].run = SyncRun("gap", 10_000.0, ["assignments"])
    assert s.due("acme") == (0.0, "gap")


async def test_owner_takes_a_manual_syncs_versions_only_where_it_did_not_move_on() -> None:
    clock = [10_000.0]
    s = _scheduler(clock)
    base = {"tenant": "acme", "versions": {"users": "u1", "assignments": "a1"}, "alive_at": 9_999}
    # The manual sync started from users u1 (still stored) but assignments a0 (the owner has
    # synced them since): only users is taken, the owner's newer assignments version is kept.
    stale = ManualSync(
        "acme", {"users": "u1", "assignments": "a0"}, {"users": "u2", "assignments": "a2"}
    )
    key = manual_key("acme", 1)
    await _load(s, {sync_key("acme"): base, key: stale.to_value()})
    record = s.records["acme"]
    assert record.versions == {"users": "u2", "assignments": "a1"}
    assert isinstance(s._writer, _NoWrites)
    assert s._writer.values[-1]["versions"] == record.versions  # stored, then the entry deleted
    assert s._writer.deleted == [key]
    # One written while the owner runs: merged as it arrives.
    fresh = ManualSync(
        "acme", {"users": "u2", "assignments": "a1"}, {"users": "u3", "assignments": "a3"}
    )
    await s.on_record(0, key, fresh.to_value())
    assert record.versions == {"users": "u3", "assignments": "a3"}
    assert s._writer.deleted == [key, key]
    await s.on_record(0, key, None)  # its own tombstone echoing back: nothing
    await s.on_record(0, key, {"tenant": "acme", "base": 3})  # not an entry: ignored
    assert record.versions == {"users": "u3", "assignments": "a3"}
    assert ManualSync.from_value(fresh.to_value()) == fresh


async def test_gap_reports_a_completed_sync_covers_are_tombstoned() -> None:
    clock = [10_000.0]
    s = _scheduler(clock)
    base = {"tenant": "acme", "synced_through": 9_990.0, "last_sync": 9_990.0, "alive_at": 9_999}
    old, new = gap_key("acme", "i2", 1), gap_key("acme", "i3", 1)
    await _load(
        s,
        {
            sync_key("acme"): base,
            old: GapReport("acme", "i2", 9_000.0, 9_100.0).to_value(),  # before the last sync
            new: GapReport("acme", "i3", 9_995.0, 9_998.0).to_value(),  # after: a gap
        },
    )
    assert isinstance(s._writer, _NoWrites)
    assert s._writer.deleted == [old]
    record = s.records["acme"]
    assert record.gap == Gap(9_995.0, 9_998.0, "gap")
    record.synced_through, record.gap = 10_500.0, None  # what a completed gap sync leaves
    await s._drop_closed_reports(record)
    assert s._writer.deleted == [old, new]
    later = GapReport("acme", "i3", 9_995.0, 10_600.0)  # a failure after that sync began
    await s.on_record(0, new, later.to_value())
    assert record.gap is not None
    assert s._writer.values[-1]["gap"] is not None  # stored before any tombstone of it
    assert s._writer.deleted == [old, new]


async def test_revocation_cancels_the_running_sync_before_returning() -> None:
    clock = [0.0]
    s = _scheduler(clock)
    await _load(s, {})
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    s._tasks["acme"] = task
    await started.wait()
    await s.on_revoked({0})
    assert task.cancelled()
    assert "acme" not in s.records


# -- paging against the simulator ---------------------------------------------------------------


async def test_parallel_pages_keep_order_and_first_page_version(
    sim: AppleSimulator, client: AppleApiClient
) -> None:
    location = sim.default
    for i in range(23):
        location.buy(f"{i:04d}", "STDQ", 1)
    sim.config.page_size = 2
    sim.config.limits["maxRequestPerSecond"] = 1000
    sequential = await client.sync_assets()
    parallel = await client.sync_assets(parallel=5)
    assert parallel.items == sequential.items
    assert len(parallel.items) == 23
    assert parallel.pages == 12
    assert parallel.version_id == sequential.version_id
    assert parallel.uid == location.uid
    assert client.requests["get_assets"] == 24  # no retries needed at this rate


async def test_service_config_is_fetched_once_for_every_location(sim: AppleSimulator) -> None:
    from pydantic import SecretStr

    from adapters.apple.client import SharedServiceConfig
    from tests.unit.apple.conftest import settings_for

    shared = SharedServiceConfig()
    other = sim.add_location()
    settings = settings_for(sim, service_config_refresh_s=3600)
    async with (
        AppleApiClient(settings, SecretStr(sim.default.s_token), shared=shared) as first,
        AppleApiClient(settings, SecretStr(other.s_token), shared=shared) as second,
    ):
        await asyncio.gather(first.sync_assets(), second.sync_assets(), first.sync_users())
        assert (
            first.requests.get("service_config", 0) + second.requests.get("service_config", 0) == 1
        )
        assert second.requests["get_assets"] == 1
