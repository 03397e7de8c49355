"""broker.supervisor: restart with backoff, failures counted and logged, readiness, bounded stop.

Time is a fake clock the tests move; tasks synchronise with the test through events.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from broker.supervisor import Supervisor, SupervisorSettings, TaskPhase


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    clock: FakeClock, registry: CollectorRegistry | None = None, **settings: float
) -> Supervisor:
    values: dict[str, float] = {"grace_s": 30.0, "stable_after_s": 5.0, "restart_initial_s": 0.0}
    values.update(settings)
    return Supervisor(
        SupervisorSettings.model_validate(values),
        registry or CollectorRegistry(),
        clock=clock,
        rng=random.Random(1),
    )


def sample(registry: CollectorRegistry, name: str, task: str) -> float:
    return registry.get_sample_value(name, {"task": task}) or 0.0


async def test_crash_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry)
    runs = 0
    second_run = asyncio.Event()
    release = asyncio.Event()

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("not JSON")
        second_run.set()
        await release.wait()

    with caplog.at_level(logging.ERROR, logger="broker.supervisor"):
        task = sup.spawn("kapua-discovery", body)
        await asyncio.wait_for(second_run.wait(), 5)
    assert runs == 2
    assert sample(registry, "mdm_broker_task_failures_total", "kapua-discovery") == 1
    assert sample(registry, "mdm_broker_task_restarts_total", "kapua-discovery") == 1
    failure = [r for r in caplog.records if "kapua-discovery" in r.getMessage()]
    assert failure
    assert failure[0].exc_info is not None
    assert "not JSON" in (task.last_error or "")
    release.set()
    assert await task.stop(5) is True
    assert task.phase is TaskPhase.FINISHED or task.phase is TaskPhase.STOPPED


async def test_down_longer_than_grace_is_a_problem_until_stable_again() -> None:
    clock = FakeClock()
    sup = make(clock, restart_initial_s=3600.0, restart_max_s=3600.0)  # stays in its restart delay
    failed = asyncio.Event()

    async def body() -> None:
        failed.set()
        raise RuntimeError("boom")

    task = sup.spawn("android-puller-0", body)
    await asyncio.wait_for(failed.wait(), 5)
    for _ in range(3):  # let the supervisor record the failure
        await asyncio.sleep(0)
    assert task.phase is TaskPhase.RESTARTING
    clock.now += 29
    assert sup.problems() == {}
    clock.now += 2
    problems = sup.problems()
    assert list(problems) == ["android-puller-0"]
    assert "RuntimeError: boom" in problems["android-puller-0"]
    assert await task.stop(5) is True  # the restart delay is interrupted, no restart
    assert task.restarts == 0
    assert task.status().phase is TaskPhase.STOPPED


async def test_crash_loop_stays_down_and_recovers_after_a_stable_run() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry)
    runs = 0
    looping = asyncio.Event()
    release = asyncio.Event()

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= 40:
            clock.now += 1  # each run lives one (fake) second, far below stable_after_s
            raise OSError("connection refused")
        looping.set()
        await release.wait()

    task = sup.spawn("kapua-scheduler", body)
    await asyncio.wait_for(looping.wait(), 5)
    assert task.failures == 40
    assert sample(registry, "mdm_broker_task_up", "kapua-scheduler") == 0
    status = task.status()
    assert status.down_for_s is not None
    assert status.down_for_s >= 39
    assert "kapua-scheduler" in sup.problems()  # restarting often is not being up
    clock.now += 5  # the 41st run has now lasted stable_after_s
    assert sample(registry, "mdm_broker_task_up", "kapua-scheduler") == 1  # read at scrape time
    assert sup.problems() == {}
    assert task.status().down_for_s is None
    release.set()
    await task.stop(5)


async def test_normal_return_is_finished_not_restarted() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry)
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1

    task = sup.spawn("apple-reconcile", body)
    assert await task.stop(5) is True
    assert calls == 1
    assert task.phase in (TaskPhase.FINISHED, TaskPhase.STOPPED)
    assert sample(registry, "mdm_broker_task_failures_total", "apple-reconcile") == 0
    clock.now += 1000
    assert sup.problems() == {}


async def test_stop_is_bounded_for_a_task_that_ignores_its_stop_and_cancellation() -> None:
    clock = FakeClock()
    sup = make(clock, cancel_wait_s=0.05)
    entered = asyncio.Event()
    never = asyncio.Event()

    async def stubborn() -> None:
        entered.set()
        while not never.is_set():
            try:
                await never.wait()
            except asyncio.CancelledError:
                continue  # swallows cancellation: the worst case

    async def polite() -> None:
        await never.wait()

    bad = sup.spawn("stubborn", stubborn)
    good = sup.spawn("polite", polite)
    await asyncio.wait_for(entered.wait(), 5)
    assert await asyncio.wait_for(sup.stop(0.05), 5) is False  # returns: the budget holds
    assert good.done
    assert bad.phase is TaskPhase.STOPPED
    never.set()  # let the abandoned coroutine end so the loop closes cleanly
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_run_cancelled_by_somebody_else_counts_as_a_failure() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry)
    runs: list[asyncio.Task[None] | None] = []
    second = asyncio.Event()
    release = asyncio.Event()

    async def body() -> None:
        runs.append(asyncio.current_task())
        if len(runs) == 2:
            second.set()
        await release.wait()

    task = sup.spawn("kafka-health-probe", body)
    for _ in range(3):
        await asyncio.sleep(0)
    first = runs[0]
    assert first is not None
    first.cancel()
    await asyncio.wait_for(second.wait(), 5)
    assert sample(registry, "mdm_broker_task_failures_total", "kafka-health-probe") == 1
    release.set()
    await task.stop(5)


async def test_names_are_unique_while_alive() -> None:
    sup = make(FakeClock())
    release = asyncio.Event()
    task = sup.spawn("kapua-shard", release.wait)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already running"):
        sup.spawn("kapua-shard", release.wait)  # type: ignore[arg-type]
    release.set()
    await task.stop(5)
    again = sup.spawn("kapua-shard", release.wait)  # type: ignore[arg-type]
    await again.stop(5)


def test_settings_refuse_a_grace_shorter_than_the_stable_time() -> None:
    with pytest.raises(ValidationError, match="stable_after_s"):
        SupervisorSettings(grace_s=5, stable_after_s=10)


async def test_one_shot_failure_is_logged_counted_and_listed_then_ages_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry, failure_visible_s=60.0)

    async def retire() -> None:
        raise RuntimeError("accumulator gone")

    async def fine() -> int:
        return 7

    with caplog.at_level(logging.ERROR, logger="broker.supervisor"):
        failing = sup.run_once("kafka-producer-retire", retire(), task_name="retire-3")
        ok = sup.run_once("kafka-producer-retire", fine())
        await asyncio.wait({failing, ok})
        await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
    assert failing.get_name() == "retire-3"
    assert ok.result() == 7
    assert sample(registry, "mdm_broker_task_failures_total", "kafka-producer-retire") == 1
    logged = [r for r in caplog.records if "kafka-producer-retire" in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
    assert "accumulator gone" in sup.recent_failures()["kafka-producer-retire"]
    assert sup.problems() == {}  # nothing is left down: informational only
    clock.now += 61
    assert sup.recent_failures() == {}


async def test_one_shot_cancellation_is_not_a_failure() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry)
    task = sup.run_once("kapua-poll", asyncio.sleep(3600))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task})
    await asyncio.sleep(0)
    assert sample(registry, "mdm_broker_task_failures_total", "kapua-poll") == 0
    assert sup.recent_failures() == {}


def test_report_failure_counts_a_caught_exception() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    sup = make(clock, registry)
    sup.report_failure("apple-sync-run", KeyError("x"))
    sup.report_failure("apple-sync-run", KeyError("y"))
    assert sample(registry, "mdm_broker_task_failures_total", "apple-sync-run") == 2
    assert sup.recent_failures()["apple-sync-run"].startswith("2 failure(s)")
