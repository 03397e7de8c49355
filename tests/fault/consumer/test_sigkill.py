"""The consumer process SIGKILLed at random points, including right between the handler's
transaction commit and the Kafka offset commit: with PostgresStore the effect table ends with
exactly one row per id, none missing; with SQLiteStore (whose record of "done" is written after
the handlers, in the background of the next batch) no id is missing and the events whose effect
happened before their record are handled again (real Kafka, real PostgreSQL, real processes)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.fault.consumer.sqlite_worker import MAX_BATCH_RECORDS
from tests.integration.consumer.helpers import (
    committed_offsets,
    create_topics,
    produce,
    records_of,
    sample_event,
    wait_all_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 10_000
REPO = Path(__file__).resolve().parents[3]


_SPAWNED: list[subprocess.Popen[bytes]] = []


def _spawn(
    args: list[str], log: Path, kill_after: int = 0, worker: str = "pg_worker"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MDM_TEST_KILL_AFTER_EFFECTS", None)
    if kill_after:
        env["MDM_TEST_KILL_AFTER_EFFECTS"] = str(kill_after)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"tests.fault.consumer.{worker}", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _SPAWNED.append(proc)
    return proc


def _kill_leftovers() -> None:
    """No worker outlives the test, whatever failed."""
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker did not exit within {timeout_s}s")
        await asyncio.sleep(0.05)
    return proc.returncode


@pytest.mark.postgres
async def test_sigkill_at_random_points_leaves_exactly_one_effect_per_id(
    kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str, tmp_path: Path
) -> None:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 4, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, records_of([sample_event(n) for n in range(EVENTS)]))
    db = await asyncpg.connect(postgres_dsn)
    await db.execute("CREATE TABLE effects (id text NOT NULL)")  # no unique key: doubles show
    args = [kafka_bootstrap, topic, group, postgres_dsn]
    log = tmp_path / "worker.log"
    rng = random.Random(20261121)
    ahead_of_kafka: list[int] = []  # effects committed in PostgreSQL but not yet in Kafka

    async def effects() -> int:
        return int(await db.fetchval("SELECT count(*) FROM effects"))

    async def record_gap() -> None:
        committed = sum((await committed_offsets(kafka_bootstrap, group, topic)).values())
        ahead_of_kafka.append(await effects() - committed)

    try:
        # 1. the worker kills itself right after its 1,234th handler transaction committed
        proc = _spawn(args, log, kill_after=1234)
        assert await _wait_exit(proc, 90) == -signal.SIGKILL
        await record_gap()
        # 2. killed from outside at random points of progress
        for _ in range(3):
            start = await effects()
            target = start + rng.randrange(300, 1800)
            proc = _spawn(args, log)
            deadline = time.monotonic() + 90
            while await effects() < target and proc.poll() is None:
                assert time.monotonic() < deadline, "worker made no progress"
                await asyncio.sleep(rng.uniform(0.001, 0.02))
            proc.send_signal(signal.SIGKILL)
            assert await _wait_exit(proc, 30) == -signal.SIGKILL
            await record_gap()
        assert await effects() < EVENTS, "the kills came too late to matter; lower the targets"
        # 3. a last worker runs until everything is committed, then stops gracefully
        proc = _spawn(args, log)
        try:
            await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await _wait_exit(proc, 60) == 0
        total = await effects()
        distinct = int(await db.fetchval("SELECT count(DISTINCT id) FROM effects"))
        expected = {f"e{n}" for n in range(EVENTS)}
        missing = expected - {r["id"] for r in await db.fetch("SELECT id FROM effects")}
    finally:
        _kill_leftovers()
        await db.close()

    assert max(ahead_of_kafka) > 0, f"no kill hit the effect/offset window: {ahead_of_kafka}"
    assert missing == set()
    assert distinct == EVENTS
    assert total == EVENTS, f"{total - EVENTS} doubled effects"


SQLITE_EVENTS = 4_000


async def test_sqlite_store_sigkilled_between_handlers_and_record_loses_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic, group = f"{topic_prefix}.events", f"{topic_prefix}-g"
    await create_topics(kafka_bootstrap, {topic: 4, f"{topic}.dlq": 1})
    events = [sample_event(n) for n in range(SQLITE_EVENTS)]
    await produce(kafka_bootstrap, topic, records_of(events))
    effects_file = tmp_path / "effects.txt"
    args = [kafka_bootstrap, topic, group, str(tmp_path / "dedupe.db"), str(effects_file)]
    log = tmp_path / "worker.log"
    rng = random.Random(20261202)

    def effects() -> list[str]:
        return effects_file.read_text().split() if effects_file.exists() else []

    try:
        # 1. killed inside its 1,234th handler: effect written, its record and offset not
        proc = _spawn(args, log, kill_after=1234, worker="sqlite_worker")
        assert await _wait_exit(proc, 90) == -signal.SIGKILL
        first_run = effects()
        # 2. killed from outside at random points of progress
        for _ in range(3):
            target = len(effects()) + rng.randrange(200, 900)
            proc = _spawn(args, log, worker="sqlite_worker")
            deadline = time.monotonic() + 90
            while len(effects()) < target and proc.poll() is None:
                assert time.monotonic() < deadline, "worker made no progress"
                await asyncio.sleep(rng.uniform(0.001, 0.02))
            proc.send_signal(signal.SIGKILL)
            assert await _wait_exit(proc, 30) == -signal.SIGKILL
        # 3. a last worker runs until everything is committed, then stops gracefully
        proc = _spawn(args, log, worker="sqlite_worker")
        try:
            await wait_all_committed(kafka_bootstrap, group, topic, timeout_s=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await _wait_exit(proc, 60) == 0
        final = effects()
    finally:
        _kill_leftovers()

    assert set(final) == {e.id for e in events}  # at least once: nothing lost
    assert first_run[-1] in final[len(first_run) :], "the killed handler's event did not run again"
    # A kill re-runs only handlers whose ids were not durably recorded yet: per partition at most
    # the batch being written and the next one being handled (pipelined writes).
    kills, partitions = 4, 4
    rerun_bound = kills * partitions * 2 * MAX_BATCH_RECORDS
    assert len(final) - SQLITE_EVENTS <= rerun_bound, "more re-runs than the kills explain"
