"""A Kapua poll that crashes is reported through the supervisor and the operation polled again."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from prometheus_client import CollectorRegistry

from adapters.kapua.cursors import cursor_value, op_key
from adapters.kapua.metrics import KapuaMetrics
from adapters.kapua.poller import WatchedOp
from adapters.kapua.scheduler import PollScheduler
from adapters.kapua.settings import KapuaSettings
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.supervisor import Supervisor
from tests.unit.kapua.test_normalize_and_cursors import ROW


class CrashingPoller:
    def __init__(self) -> None:
        self.polls = 0
        self.crashed = asyncio.Event()

    async def poll(self, op: WatchedOp) -> Any:
        self.polls += 1
        self.crashed.set()
        raise ZeroDivisionError("a bug in the poller")


class OneLoadedPartition:
    partition_count = 1
    loaded = {0}


class NoStore:
    async def put(self, key: str, kind: str, value: Any) -> None:
        return None


async def test_a_crashing_poll_is_counted_shown_and_rescheduled() -> None:
    registry = CollectorRegistry()
    metrics = BrokerMetrics(registry)
    supervisor = Supervisor(registry=registry, rng=random.Random(1))
    poller = CrashingPoller()
    settings = KapuaSettings(enabled=True, api_key="k")
    scheduler = PollScheduler(
        settings,
        poller,  # type: ignore[arg-type]
        NoStore(),  # type: ignore[arg-type]
        KafkaHealth(),
        KapuaMetrics(metrics),
        supervisor,
    )
    scheduler.shard = OneLoadedPartition()  # type: ignore[assignment]  # owns everything
    assert await scheduler.register("s", "d", "op-1", "test")
    stop = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stop))
    await asyncio.wait_for(poller.crashed.wait(), 5)
    stop.set()
    await asyncio.wait_for(running, 10)
    await asyncio.sleep(0)
    failures = registry.get_sample_value("mdm_broker_task_failures_total", {"task": "kapua-poll"})
    assert failures == 1
    assert "ZeroDivisionError" in supervisor.recent_failures()["kapua-poll"]
    assert op_key("s", "op-1") in scheduler.ops  # still watched: polled again later


async def test_suspects_reload_with_the_cursor_and_a_stragglers_are_added() -> None:
    """Invalid COMPLETED/FAILED rows still to dead-letter come back from the state topic: on load
    (a restart) and from a cursor the previous owner wrote after we loaded (a handover)."""
    metrics = BrokerMetrics(CollectorRegistry())
    scheduler = PollScheduler(
        KapuaSettings(enabled=True, api_key="k"),
        CrashingPoller(),  # type: ignore[arg-type]
        NoStore(),  # type: ignore[arg-type]
        KafkaHealth(),
        KapuaMetrics(metrics),
        Supervisor(registry=CollectorRegistry()),
    )
    row = {"id": "r1", "status": "COMPLETED", "progress": "100%"}
    key = op_key("s", "op-1")
    await scheduler.on_loaded(
        0, {f"{key}/cursor~0": cursor_value("s", "d", "op-1", 1, ["a"], {"r1": (row, "bad")})}
    )
    op = scheduler.ops[key]
    assert op.suspects == {"r1": (row, "bad", None)}  # the grace restarts at the next read
    row2 = row | {"id": "r2"}
    straggler = cursor_value("s", "d", "op-1", 2, ["a", "r1"], {"r2": (row2, "bad")})
    await scheduler.on_record(0, f"{key}/cursor~0", straggler)
    assert op.suspects == {"r2": (row2, "bad", None)}  # r1 was dead-lettered by the other
    assert op.dirty  # rewritten with our next checkpoint


async def test_the_held_row_reloads_with_the_cursor_and_a_stragglers_is_taken() -> None:
    """The valid COMPLETED/FAILED row waiting for the record comes back from the state topic (its
    grace restarts when it is next listed); one the mapping now rejects waits as a suspect; a
    previous owner's held row is taken unless it published it or we hold a newer one."""
    scheduler = PollScheduler(
        KapuaSettings(enabled=True, api_key="k"),
        CrashingPoller(),  # type: ignore[arg-type]
        NoStore(),  # type: ignore[arg-type]
        KafkaHealth(),
        KapuaMetrics(BrokerMetrics(CollectorRegistry())),
        Supervisor(registry=CollectorRegistry()),
    )
    held = ROW | {"id": "h1", "operationId": "op-1", "scopeId": "s", "status": "COMPLETED"}
    invalid = held | {"id": "h2", "progress": "100%"}
    keys = [op_key("s", f"op-{i}") for i in (1, 2, 3)]
    await scheduler.on_loaded(
        0,
        {
            f"{keys[0]}/cursor~0": cursor_value("s", "d", "op-1", 1, ["a"], None, held),
            f"{keys[1]}/cursor~0": cursor_value("s", "d", "op-2", 1, ["a"], None, invalid),
            f"{keys[2]}/cursor~0": cursor_value("s", "d", "op-3", 1, ["a"]),
        },
    )
    first, second, third = (scheduler.ops[k] for k in keys)
    assert first.held is not None
    assert (first.held[0].id, first.held[1], first.held_since) == ("h1", held, None)
    assert second.held is None
    assert list(second.suspects) == ["h2"]
    straggler = cursor_value("s", "d", "op-3", 2, ["a"], None, held | {"operationId": "op-3"})
    await scheduler.on_record(0, f"{keys[2]}/cursor~0", straggler)
    assert third.held is not None
    assert third.held[0].id == "h1"
    assert third.dirty  # rewritten with our next checkpoint
    published = cursor_value("s", "d", "op-1", 2, ["a", "h1"])  # the other published it
    await scheduler.on_record(0, f"{keys[0]}/cursor~0", published)
    assert first.held is None
