"""SQLite dedupe store: the embedded default, one file, no server.

Guarantees: an id recorded is skipped until it is older than ``retention_s`` (see
:mod:`broker.consumer.store`), across restarts of the process (WAL journal, ``synchronous=NORMAL``:
durable when the process dies; a power loss may forget the ids recorded since the last checkpoint
that the OS had not yet written back, which then run again).
The record of "done" is written after the handler returned, in its own transaction: a crash
between the handler's side effect and that write runs the handler again on redelivery. Make the
handler's effect idempotent, or use :class:`~broker.consumer.PostgresStore`, whose record shares
the handler's transaction.

Batches (:meth:`SQLiteStore.run_batch`, what the consumer uses): one lookup of all the batch's
ids, the handler once per new id, then one transaction recording them all (``executemany``). A
crash before that commit runs the batch's handlers again on redelivery (at-least-once, as above).

One connection, used from one dedicated thread so the event loop never blocks on disk; calls are
serialized. Share a file between processes only on a local disk (SQLite locking).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from broker.consumer.errors import StoreError
from broker.consumer.store import DEFAULT_RETENTION_S, BatchResult, EventKey, StopBatch

_R = TypeVar("_R")

#: Ids per lookup statement (SQLite's default limit is 32,766 parameters; older ones 999).
_LOOKUP_CHUNK = 900

#: WAL pages between automatic checkpoints (SQLite's default: 1,000). Each batch commit appends the
#: pages it changed to the WAL, and a checkpoint copies the newest version of each page into the
#: database and syncs it: at 10,000 pages (a WAL of up to ~40 MiB) a page that many commits changed
#: (the B-trees' right edges, their inner pages) is copied once instead of ten times. Measured:
#: lookup + insert + commit per key 4.7 -> 3.6 us with sequential ids, 18.8 -> 15.7 with random ones.
_WAL_AUTOCHECKPOINT_PAGES = 10_000

#: Page cache of the store's connection, in MiB (SQLite's default: 2 MiB). Notification ids are
#: random, so each batch's lookups and inserts touch pages all over the primary key and the
#: index: with 150,000-200,000 recorded ids, lookup + insert + commit cost 29 us per id with the
#: default cache and 21 us with 64 MiB; at 600,000-800,000 ids, 39 and 34 us
#: (``python -m bench.sqlite_cache``: the store's own statements, batches of 500). The cache
#: fills only as pages are read.
DEFAULT_CACHE_MIB = 64

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS processed ("
    " source TEXT NOT NULL, id TEXT NOT NULL, processed_at REAL NOT NULL,"
    " PRIMARY KEY (source, id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS processed_at_idx ON processed (processed_at)",
    "CREATE TABLE IF NOT EXISTS failures ("
    " source TEXT NOT NULL, id TEXT NOT NULL, attempts INTEGER NOT NULL, updated_at REAL NOT NULL,"
    " PRIMARY KEY (source, id)) WITHOUT ROWID",
)


class SQLiteStore:
    """Processed ids and failure counts in a SQLite file; the handler's transaction is ``None``."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
        cache_mib: int = DEFAULT_CACHE_MIB,
    ) -> None:
        if cache_mib < 1:
            raise ValueError("cache_mib must be at least 1")
        self._path = Path(path)
        self._retention_s = retention_s
        self._cache_mib = cache_mib
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        try:
            self._conn = await self._call_raw(self._connect)
        except StoreError:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        thread = self._thread
        if conn is not None and thread is not None:
            async with self._lock:
                await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        if thread is not None:
            self._thread = None
            thread.shutdown(wait=False)

    async def run_batch(
        self, keys: Sequence[EventKey], work: Callable[[int, None], Awaitable[None]]
    ) -> BatchResult:
        """One lookup for all ``keys``, ``work`` per new key, one transaction recording them."""
        conn = self._require_conn()
        cutoff = self._clock() - self._retention_s
        recorded = await self._call_raw(lambda: _lookup(conn, keys, cutoff))
        ran: list[bool] = []
        done: list[EventKey] = []
        error: Exception | None = None
        for i, key in enumerate(keys):
            if key in recorded:
                ran.append(False)
                continue
            try:
                await work(i, None)
            except StopBatch:
                break
            except Exception as exc:
                error = exc
                break
            recorded.add(key)
            done.append(key)
            ran.append(True)
        if done:
            now = self._clock()
            rows = [(source, id_, now) for source, id_ in done]
            await self._call_raw(lambda: _record(conn, rows))
        if error is not None:
            return BatchResult(ran, error, len(ran))
        return BatchResult(ran)

    async def run_once(self, key: EventKey, work: Callable[[None], Awaitable[None]]) -> bool:
        if await self.is_processed(key):
            return False
        await work(None)
        await self._call(
            "INSERT OR REPLACE INTO processed (source, id, processed_at) VALUES (?, ?, ?)",
            (*key, self._clock()),
        )
        return True

    async def is_processed(self, key: EventKey) -> bool:
        rows = await self._call(
            "SELECT 1 FROM processed WHERE source = ? AND id = ? AND processed_at >= ?",
            (*key, self._clock() - self._retention_s),
        )
        return bool(rows)

    async def record_failure(self, key: EventKey) -> int:
        rows = await self._call(
            "INSERT INTO failures (source, id, attempts, updated_at) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (source, id) DO UPDATE SET attempts = attempts + 1,"
            " updated_at = excluded.updated_at RETURNING attempts",
            (*key, self._clock()),
        )
        return int(rows[0][0])

    async def clear_failures(self, key: EventKey) -> None:
        await self._call("DELETE FROM failures WHERE source = ? AND id = ?", key)

    async def purge_expired(self) -> int:
        cutoff = (self._clock() - self._retention_s,)
        a = await self._call("DELETE FROM processed WHERE processed_at < ? RETURNING 1", cutoff)
        b = await self._call("DELETE FROM failures WHERE updated_at < ? RETURNING 1", cutoff)
        return len(a) + len(b)

    # -- internals ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA cache_size=-{self._cache_mib * 1024}")  # negative: KiB
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("SQLiteStore is not open")
        return self._conn

    async def _call(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._require_conn()

        def run() -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return await self._call_raw(run)

    async def _call_raw(self, fn: Callable[[], _R]) -> _R:
        thread = self._thread
        if thread is None:
            raise StoreError("SQLiteStore is not open")
        async with self._lock:
            try:
                return await asyncio.get_running_loop().run_in_executor(thread, fn)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"SQLite store {self._path}: {exc}") from exc


def _lookup(conn: sqlite3.Connection, keys: Sequence[EventKey], cutoff: float) -> set[EventKey]:
    """The keys among ``keys`` recorded at or after ``cutoff`` (runs in the store's thread).

    One statement per source (a batch has few) and chunk, ``source = ? AND id IN (...)``, so that
    SQLite searches the primary key (a row-value ``IN`` would scan the table).
    """
    by_source: dict[str, list[str]] = {}
    for source, id_ in keys:
        by_source.setdefault(source, []).append(id_)
    found: set[EventKey] = set()
    for source, ids in by_source.items():
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT id FROM processed WHERE source = ?"  # noqa: S608 (only ?s)
                f" AND id IN ({marks}) AND processed_at >= ?",
                (source, *chunk, cutoff),
            ).fetchall()
            found.update((source, row[0]) for row in rows)
    return found


def _record(conn: sqlite3.Connection, rows: list[tuple[str, str, float]]) -> None:
    """Record ``rows`` in one transaction (runs in the store's thread)."""
    conn.execute("BEGIN")
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO processed (source, id, processed_at) VALUES (?, ?, ?)", rows
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
