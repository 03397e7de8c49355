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
* ``bare+sqlite`` / ``bare+validate+sqlite`` (and ``..., random ids``): the bare loop (with
  ``orjson.loads``, or with :func:`~broker.events.decode_event`) plus the dedupe a team would
  hand-write, the SQLite baseline that issue 14's SQLite target names: per fetched batch, in one
  dedicated thread, one ``SELECT ... IN (...)`` of the batch's ids, ``executemany`` of
  ``INSERT OR IGNORE`` for the new ones and one commit, then the Kafka commit. Same pragmas as
  :class:`SQLiteStore` (WAL, ``synchronous=NORMAL``, its autocheckpoint and page cache), so the
  comparison is fair; its table holds only the keys (no timestamp, no expiry index, no failure
  counts), and nothing overlaps: the batch's write is awaited before its Kafka commit.
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
import concurrent.futures
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
from broker.consumer.sqlite_store import _WAL_AUTOCHECKPOINT_PAGES, DEFAULT_CACHE_MIB
from broker.events import CanonicalEvent, decode_event, encode_event

PARTITIONS = 6

_R = TypeVar("_R")


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


def _bare_consumer(bootstrap: str, topic: str, group_prefix: str) -> AIOKafkaConsumer:
    """A consumer of ``topic`` in a fresh group, from the earliest offset, committing by hand."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{group_prefix}-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )


async def _bare(
    bootstrap: str, topic: str, n: int, decode: Callable[[bytes], object] = orjson.loads
) -> _Run:
    consumer = _bare_consumer(bootstrap, topic, "bare")
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


def _key_of_dict(value: bytes) -> tuple[str, str]:
    event = orjson.loads(value)
    return event["source"], event["id"]


def _key_of_event(value: bytes) -> tuple[str, str]:
    event = decode_event(value)
    return event.source, event.id


class _SQLiteDedupe:
    """The hand-written dedupe of ``bare+sqlite``: a table of (source, id) keys in one SQLite
    connection, used from one dedicated thread. Pragmas as :class:`SQLiteStore`'s connection."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bare-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._conn = await self._run(self._connect)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
        self._thread.shutdown()

    async def new_keys(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Record ``keys`` in one transaction; return those not recorded before (in order)."""
        return await self._run(lambda: self._record(keys))

    async def _run(self, fn: Callable[[], _R]) -> _R:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA cache_size=-{DEFAULT_CACHE_MIB * 1024}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS seen (source TEXT NOT NULL, id TEXT NOT NULL,"
            " PRIMARY KEY (source, id)) WITHOUT ROWID"
        )
        return conn

    def _record(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        assert self._conn is not None
        conn = self._conn
        seen: set[tuple[str, str]] = set()
        conn.execute("BEGIN")
        try:
            for source in {s for s, _ in keys}:
                ids = list(dict.fromkeys(i for s, i in keys if s == source))
                for start in range(0, len(ids), 900):  # SQLite's old limit: 999 parameters
                    chunk = ids[start : start + 900]
                    rows = conn.execute(
                        "SELECT id FROM seen WHERE source = ?"  # noqa: S608 (only ?s)
                        f" AND id IN ({', '.join('?' * len(chunk))})",
                        (source, *chunk),
                    )
                    seen.update((source, row[0]) for row in rows)
            new = [key for key in dict.fromkeys(keys) if key not in seen]
            conn.executemany("INSERT OR IGNORE INTO seen (source, id) VALUES (?, ?)", new)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return new


async def _bare_sqlite(
    bootstrap: str, topic: str, n: int, path: Path, key: Callable[[bytes], tuple[str, str]]
) -> _Run:
    """``getmany`` -> decode each record -> one dedupe transaction for the batch -> ``commit``.
    No handler runs (the library's rows run a no-op one): the cost is the loop's and the store's."""
    dedupe = _SQLiteDedupe(path)
    consumer = _bare_consumer(bootstrap, topic, "bare-sqlite")
    clock = _Clock()
    await dedupe.open()
    try:
        await consumer.start()
        clock.mark("start")
        seen = 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            clock.mark("first")
            keys = [key(record.value) for records in batch.values() for record in records]
            await dedupe.new_keys(keys)
            await consumer.commit()
            seen += len(keys)
        clock.mark("nth")
    finally:
        await consumer.stop()
        await dedupe.close()
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
        "bare+sqlite": lambda r: _bare_sqlite(bootstrap, topic, n, tmp / f"b{r}.db", _key_of_dict),
        "bare+validate+sqlite": lambda r: _bare_sqlite(
            bootstrap, topic, n, tmp / f"bv{r}.db", _key_of_event
        ),
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
        variants["bare+sqlite, random ids"] = lambda r: _bare_sqlite(
            bootstrap, random_topic, n, tmp / f"random-b{r}.db", _key_of_dict
        )
        variants["bare+validate+sqlite, random ids"] = lambda r: _bare_sqlite(
            bootstrap, random_topic, n, tmp / f"random-bv{r}.db", _key_of_event
        )
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
