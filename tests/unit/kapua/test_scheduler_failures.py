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
