"""Consumer library throughput: canonical events from Kafka through a no-op handler.

Every variant reads the same ``n`` canonical events (Apple assignment events, ~870 B each) from
the same 6-partition topic with a fresh consumer group (the events share one Apple location, hence
one key: they all land in ONE partition, the hardest case for a consumer that orders per
partition). Every variant is timed over the same window (see :class:`_Clock`): from the return
of the consumer's ``start()`` (store opened, group joined, partitions assigned: start-up is not
counted; aiokafka's fetcher may already be fetching in the background) to the return of its
stop, once the last offset is committed, the Kafka consumer closed and the store closed (so work
a store defers to ``close()`` is charged to it). The previous window, first record fetched ->
n-th record final, which left out the first batch's work and whatever a store finishes later, is
still recorded beside it (``first_to_nth``), for comparison:

* ``bare``: ``AIOKafkaConsumer.getmany`` -> ``orjson.loads`` per record -> ``commit`` per batch.
  The least any consumer does; the baseline of the ratios.
* ``bare+validate``: the same loop with :func:`~broker.events.decode_event` (``orjson.loads`` +
  pydantic validation into a :class:`CanonicalEvent`) instead of ``orjson.loads``: information,
  not a target; the ceiling of any consumer that hands its handler a validated event.
* ``memory`` / ``sqlite`` / ``postgres``: :class:`IdempotentConsumer` with that store and a
  handler that does nothing (with PostgreSQL the handler gets the transaction and does nothing).
* ``sqlite, write awaited`` (and ``sqlite, random ids, write awaited``): information, the same
  store without its pipelined writes (each batch's write awaited before the next batch, as
  before they existed), to show what the overlap is worth on the machine at hand.
* ``sqlite, random ids`` / ``postgres, random ids`` (when ``make_random_id_events`` is given): the
  same from a second topic whose events have random ids, as real notification ids are. The
  events above have sequential ids, which the stores' B-trees append at their right edge; random
  ones land all over the tree, and each batch then rewrites about one page per new id.

Variants run in alternating rounds (bare, memory, sqlite, postgres, bare, ...) and the medians are
compared, so a machine that gets busier during the run affects all of them alike.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from broker.consumer import (
    ConsumedRecord,
    ConsumerSettings,
    IdempotencyStore,
    IdempotentConsumer,
    InMemoryStore,
    PostgresStore,
    ProcessingOutcome,
    SQLiteStore,
)
from broker.events import CanonicalEvent, decode_event, encode_event

PARTITIONS = 6


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    finally:
        await admin.close()


async def _fill(bootstrap: str, topic: str, events: list[CanonicalEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=encode_event(e), key=e.partitionkey.encode())
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class _WriteAwaited:
    """A :class:`SQLiteStore` seen through the batching interface only (no
    ``run_batch_pipelined``): the consumer then waits for each batch's write."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.open = store.open
        self.close = store.close
        self.run_batch = store.run_batch
        self.run_once = store.run_once
        self.is_processed = store.is_processed
        self.record_failure = store.record_failure
        self.clear_failures = store.clear_failures
        self.purge_expired = store.purge_expired


class _Clock:
    """Wall (``perf_counter``) and CPU time at the marks of one run. CPU is
    ``time.process_time()``: this process, all its threads (the kernel's per-process figure that
    /proc/self/stat gives as utime + stime, read at nanosecond resolution instead of ticks).

    Marks: ``start`` (the consumer's ``start()`` returned), ``first`` (first record fetched, or
    first outcome of the library), ``nth`` (n-th record final) and ``end`` (the consumer's stop
    returned: last offset committed, consumer closed, store closed)."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[float, float]] = {}

    def mark(self, name: str) -> None:
        """Record the first time ``name`` is reached (later calls keep it)."""
        if name not in self.marks:
            self.marks[name] = (time.perf_counter(), time.process_time())

    def span(self, first: str, last: str) -> tuple[float, float]:
        """Wall and CPU seconds from mark ``first`` to mark ``last``."""
        (wall0, cpu0), (wall1, cpu1) = self.marks[first], self.marks[last]
        return wall1 - wall0, cpu1 - cpu0


@dataclass(frozen=True)
class _Run:
    n: int
    wall_s: float  # start -> end: the measured window
    cpu_s: float  # CPU seconds of this process over the same window
    first_to_nth_wall_s: float  # the previous window, for comparison
    first_to_nth_cpu_s: float

    @classmethod
    def of(cls, clock: _Clock, n: int) -> _Run:
        return cls(n, *clock.span("start", "end"), *clock.span("first", "nth"))

    @property
    def rates(self) -> tuple[float, float]:
        """Events per wall second and per CPU second over the measured window."""
        return self.n / self.wall_s, self.n / self.cpu_s

    @property
    def first_to_nth_rates(self) -> tuple[float, float]:
        """The same over the previous window."""
        return self.n / self.first_to_nth_wall_s, self.n / self.first_to_nth_cpu_s


async def _bare(
    bootstrap: str, topic: str, n: int, decode: Callable[[bytes], object] = orjson.loads
) -> _Run:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    clock = _Clock()
    await consumer.start()  # returns once the group is joined and the partitions assigned
    clock.mark("start")
    try:
        seen = 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=200)
            if batch:
                clock.mark("first")
            for records in batch.values():
                for record in records:
                    decode(record.value)
                seen += len(records)
            if batch:
                await consumer.commit()
        clock.mark("nth")
    finally:
        await consumer.stop()
    clock.mark("end")
    return _Run.of(clock, n)


async def _idempotent(bootstrap: str, topic: str, n: int, store: IdempotencyStore[Any]) -> _Run:
    done = asyncio.Event()
    seen = 0
    clock = _Clock()

    def observe(outcome: ProcessingOutcome, record: ConsumedRecord) -> None:
        nonlocal seen
        clock.mark("first")
        seen += 1
        if seen >= n:
            clock.mark("nth")
            done.set()

    async def handler(event: CanonicalEvent, tx: Any) -> None:
        return None

    settings = ConsumerSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=f"idem-{uuid.uuid4().hex[:8]}",
        dlq_topic=f"{topic}.dlq",
        # the loop sees the stop request at its next poll: 20 ms keeps that idle wait, which the
        # bare loop (it knows n) does not have, out of the wall figures (the CPU ones barely see it)
        poll_timeout_s=0.02,
    )
    consumer = IdempotentConsumer(settings, store, handler, observer=observe)
    # opens the store, starts the DLQ producer, joins the group, waits for the assignment
    await consumer.start()
    clock.mark("start")
    stop = asyncio.Event()
    runner = asyncio.create_task(consumer.run_until(stop))
    try:
        await asyncio.wait_for(done.wait(), 600)
    finally:
        stop.set()
        # stop(): the last records finished, their offsets committed, the Kafka consumer and the
        # DLQ producer closed, the store closed (its deferred writes done)
        await runner
    clock.mark("end")
    return _Run.of(clock, n)


async def bench_consumer(
    bootstrap: str,
    n: int,
    rounds: int,
    make_events: Callable[[int], list[CanonicalEvent]],
    postgres_dsn: str | None = None,
    make_random_id_events: Callable[[int], list[CanonicalEvent]] | None = None,
) -> dict[str, Any]:
    topic = f"bench{uuid.uuid4().hex[:6]}.events"
    await _create_topic(bootstrap, topic)
    await _fill(bootstrap, topic, make_events(n))
    random_topic = f"bench{uuid.uuid4().hex[:6]}.random.events"
    if make_random_id_events is not None:
        await _create_topic(bootstrap, random_topic)
        await _fill(bootstrap, random_topic, make_random_id_events(n))
    tmp = Path(tempfile.mkdtemp(prefix="mdm-bench-"))

    variants: dict[str, Callable[[int], Awaitable[_Run]]] = {
        "bare": lambda r: _bare(bootstrap, topic, n),
        "bare+validate": lambda r: _bare(bootstrap, topic, n, decode_event),
        "memory": lambda r: _idempotent(bootstrap, topic, n, InMemoryStore(max_entries=n + 1)),
        "sqlite": lambda r: _idempotent(bootstrap, topic, n, SQLiteStore(tmp / f"r{r}.db")),
        "sqlite, write awaited": lambda r: _idempotent(
            bootstrap, topic, n, _WriteAwaited(SQLiteStore(tmp / f"a{r}.db"))
        ),
    }
    if postgres_dsn:
        variants["postgres"] = lambda r: _idempotent(
            bootstrap, topic, n, PostgresStore(postgres_dsn, table=f"bench_{uuid.uuid4().hex[:8]}")
        )
    if make_random_id_events is not None:
        variants["sqlite, random ids"] = lambda r: _idempotent(
            bootstrap, random_topic, n, SQLiteStore(tmp / f"random{r}.db")
        )
        variants["sqlite, random ids, write awaited"] = lambda r: _idempotent(
            bootstrap, random_topic, n, _WriteAwaited(SQLiteStore(tmp / f"random-a{r}.db"))
        )
        if postgres_dsn:
            variants["postgres, random ids"] = lambda r: _idempotent(
                bootstrap,
                random_topic,
                n,
                PostgresStore(postgres_dsn, table=f"bench_{uuid.uuid4().hex[:8]}"),
            )
    runs: dict[str, list[_Run]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, run in variants.items():
            runs[name].append(await run(r))
    first_to_nth = _summary({k: [x.first_to_nth_rates for x in v] for k, v in runs.items()})
    return {
        "unit": "events/s (consumer started -> last offset committed, consumer and store "
        "closed); events per CPU second of this process over the same window",
        "n": n,
        "partitions": PARTITIONS,
        "rounds": rounds,
        **_summary({k: [x.rates for x in v] for k, v in runs.items()}),
        "first_to_nth": {
            "unit": "the window used before: first record fetched -> n-th record final",
            **first_to_nth,
        },
        "baseline": "bare AIOKafkaConsumer getmany -> orjson.loads -> commit per batch",
    }


def _summary(rates: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Per-round rates (events per wall second, per CPU second) of each variant: the runs, the
    medians and their ratios to ``bare``."""
    wall = {name: statistics.median(w for w, _ in v) for name, v in rates.items()}
    cpu = {name: statistics.median(c for _, c in v) for name, v in rates.items()}
    return {
        "runs": {name: [round(w) for w, _ in v] for name, v in rates.items()},
        "runs_per_cpu_s": {name: [round(c) for _, c in v] for name, v in rates.items()},
        "medians": {name: round(v) for name, v in wall.items()},
        "ratios": {name: round(v / wall["bare"], 3) for name, v in wall.items()},
        "per_cpu_s_medians": {name: round(v) for name, v in cpu.items()},
        "per_cpu_s_ratios": {name: round(v / cpu["bare"], 3) for name, v in cpu.items()},
    }
