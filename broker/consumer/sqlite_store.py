"""SQLite dedupe store: the embedded default, one file, no server.

Guarantees: an id recorded is skipped until it is older than ``retention_s`` (see
:mod:`broker.consumer.store`), across restarts of the process (WAL journal, ``synchronous=NORMAL``:
durable when the process dies; a power loss may forget the last few ids, which then run again).
The record of "done" is written after the handler returned, in its own transaction: a crash
between the handler's side effect and that write runs the handler again on redelivery. Make the
handler's effect idempotent, or use :class:`~broker.consumer.PostgresStore`, whose record shares
the handler's transaction.

One connection, used from a worker thread so the event loop never blocks on disk; calls are
serialized. Share a file between processes only on a local disk (SQLite locking).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from broker.consumer.errors import StoreError
from broker.consumer.store import DEFAULT_RETENTION_S, EventKey

_R = TypeVar("_R")

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
    ) -> None:
        self._path = Path(path)
        self._retention_s = retention_s
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._conn = await self._call_raw(self._connect)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await asyncio.to_thread(conn.close)

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
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    async def _call(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._conn
        if conn is None:
            raise StoreError("SQLiteStore is not open")

        def run() -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return await self._call_raw(run)

    async def _call_raw(self, fn: Callable[[], _R]) -> _R:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"SQLite store {self._path}: {exc}") from exc
