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
:meth:`SQLiteStore.run_batch_pipelined` returns as soon as that transaction is handed to the
store's writer thread, so the caller can work on its next batch while SQLite writes this one
(SQLite's C code releases the GIL); the ids being written count as recorded for every lookup of
this store meanwhile (their handlers did run), and are forgotten again if the write fails. The
consumer commits a batch's offsets only after its write is done.

Two connections, each used from one dedicated thread so the event loop never blocks on disk: a
writer (every write, in submission order, and the single-key calls) and a reader for the batch
lookups, which WAL lets run while the writer commits. Share a file between processes only on a
local disk (SQLite locking).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from broker.consumer.errors import StoreError
from broker.consumer.store import (
    DEFAULT_RETENTION_S,
    BatchResult,
    EventKey,
    PendingRecord,
    StopBatch,
)

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
        self._reader: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_thread: concurrent.futures.ThreadPoolExecutor | None = None
        #: keys whose write is under way -> that write (see :meth:`run_batch_pipelined`)
        self._writing: dict[EventKey, object] = {}

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._reader_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="sqlite-store-reader"
        )
        try:
            self._conn = await self._call_raw(self._connect)
            self._reader = await self._call_raw(self._connect_reader)
        except StoreError:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._shutdown_threads()
            raise

    async def close(self) -> None:
        """Close the connections once the writes already submitted are done."""
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        loop = asyncio.get_running_loop()
        if conn is not None and self._thread is not None:
            async with self._lock:  # the writer thread runs jobs in order: writes first
                await loop.run_in_executor(self._thread, conn.close)
        if reader is not None and self._reader_thread is not None:
            await loop.run_in_executor(self._reader_thread, reader.close)
        self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        for thread in (self._thread, self._reader_thread):
            if thread is not None:
                thread.shutdown(wait=False)
        self._thread = self._reader_thread = None

    async def run_batch(
        self, keys: Sequence[EventKey], work: Callable[[int, None], Awaitable[None]]
    ) -> BatchResult:
        """One lookup for all ``keys``, ``work`` per new key, one transaction recording them."""
        result, write = await self.run_batch_pipelined(keys, work)
        await write.wait()
        return result

    async def run_batch_pipelined(
        self, keys: Sequence[EventKey], work: Callable[[int, None], Awaitable[None]]
    ) -> tuple[BatchResult, PendingRecord]:
        """:meth:`run_batch` that returns once the transaction recording the keys is submitted
        (see :class:`~broker.consumer.store.PipeliningStore`)."""
        reader = self._require_reader()
        reader_thread = self._reader_thread
        cutoff = self._clock() - self._retention_s
        writing = self._writing
        # before the lookup: a write that ends meanwhile was in _writing here, or is committed
        # before the lookup reads (it leaves _writing only after its commit)
        recorded = {key for key in keys if key in writing}
        recorded |= await self._call_raw(lambda: _lookup(reader, keys, cutoff), reader_thread)
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
        write = _Write(self, done, self._clock()) if done else _NOTHING_TO_WRITE
        if error is not None:
            return BatchResult(ran, error, len(ran)), write
        return BatchResult(ran), write

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
        if key in self._writing:
            return True
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

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA cache_size=-{self._cache_mib * 1024}")  # negative: KiB
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("SQLiteStore is not open")
        return self._conn

    def _require_reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError("SQLiteStore is not open")
        return self._reader

    def _submit_record(
        self, keys: list[EventKey], rows: list[tuple[str, str, float]]
    ) -> asyncio.Future[None]:
        """Start the transaction recording ``rows`` in the writer thread; ``keys`` count as
        recorded (``_writing``) until it ended, and after it only if it committed."""
        conn = self._require_conn()
        thread = self._thread
        if thread is None:
            raise StoreError("SQLiteStore is not open")
        token = object()
        writing = self._writing
        for key in keys:
            writing[key] = token

        def ended(future: asyncio.Future[None]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved here: a waiter may be gone (cancelled)
            for key in keys:
                if writing.get(key) is token:
                    del writing[key]

        future = asyncio.get_running_loop().run_in_executor(thread, _record, conn, rows)
        future.add_done_callback(ended)
        return future

    async def _call(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._require_conn()

        def run() -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return await self._call_raw(run)

    async def _call_raw(
        self, fn: Callable[[], _R], thread: concurrent.futures.ThreadPoolExecutor | None = None
    ) -> _R:
        """Run ``fn`` in ``thread`` (default: the writer's; its calls one at a time)."""
        lock = self._lock if thread is None else contextlib.nullcontext()
        if thread is None:
            thread = self._thread
        if thread is None:
            raise StoreError("SQLiteStore is not open")
        async with lock:
            try:
                return await asyncio.get_running_loop().run_in_executor(thread, fn)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"SQLite store {self._path}: {exc}") from exc


class _Write:
    """A batch's keys being recorded by the writer thread (:class:`PendingRecord`)."""

    def __init__(self, store: SQLiteStore, keys: list[EventKey], now: float) -> None:
        self._store = store
        self._keys = keys
        self._rows = [(source, id_, now) for source, id_ in keys]
        self._future: asyncio.Future[None] | None = store._submit_record(keys, self._rows)

    async def wait(self) -> None:
        if self._future is None:  # the last attempt failed: write again
            self._future = self._store._submit_record(self._keys, self._rows)
        try:
            await asyncio.shield(self._future)  # a cancelled waiter leaves the write alone
        except (sqlite3.Error, OSError) as exc:
            self._future = None
            raise StoreError(f"SQLite store {self._store._path}: {exc}") from exc


class _NothingToWrite:
    async def wait(self) -> None:
        return None


_NOTHING_TO_WRITE = _NothingToWrite()


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
    """Record ``rows`` in one transaction (runs in the store's writer thread)."""
    conn.execute("BEGIN")
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO processed (source, id, processed_at) VALUES (?, ?, ?)", rows
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
