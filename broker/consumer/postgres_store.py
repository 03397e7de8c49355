"""PostgreSQL dedupe store (asyncpg): exactly-once effect for handlers that write to PostgreSQL.

Guarantee: :meth:`PostgresStore.run_once` opens ONE transaction, inserts the ``(source, id)`` row
first, hands the same connection to the handler, and commits both together. So the handler's
writes and the record of "done" are committed atomically:

* the process dies before the commit: nothing of either is kept; redelivery runs the handler again;
* the process dies after the commit but before the Kafka offset commit: redelivery finds the row
  and skips the handler;
* two consumers handle the same event at once (e.g. a partition moved while the old owner was
  still busy): the second INSERT waits on the first's row lock and then finds the row, so only
  one handler's writes are kept.

Batches (:meth:`PostgresStore.run_batch`, what the consumer uses) keep that guarantee with one
transaction per fetched batch: one ``INSERT ... SELECT unnest(...) ON CONFLICT DO NOTHING
RETURNING`` claims every new id of the batch in one round trip (in sorted order, so two consumers
claiming overlapping batches lock rows in the same order), the handler runs once per claimed id
on that connection, and one commit keeps all the ids and all the handlers' writes together. If a
handler raises, the whole transaction rolls back: nothing of the batch is kept, and the consumer
handles those events again one at a time.

The handler must do all its database work on the connection it receives (not another connection
or pool), and must not commit or roll back the transaction itself.

Tables (created on :meth:`open`): ``{table}`` (processed ids) and ``{table}_failures`` (attempt
counts). Rows older than ``retention_s`` are deleted by :meth:`purge_expired`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresStore needs asyncpg: pip install 'mdm-notification-broker[postgres]'"
    ) from exc

from broker.consumer.errors import StoreError
from broker.consumer.store import DEFAULT_RETENTION_S, BatchResult, EventKey, StopBatch

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")

_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _RollBack(Exception):
    """Raised inside the batch transaction to roll it back after a handler failed."""


class PostgresStore:
    """Processed ids in PostgreSQL, written in the handler's own transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "mdm_consumer_processed",
        retention_s: float = DEFAULT_RETENTION_S,
        pool_size: int = 10,
    ) -> None:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"table must match {_TABLE_NAME.pattern}, got {table!r}")
        self._dsn = dsn
        self._table = table
        self._failures = f"{table}_failures"
        self._retention_s = retention_s
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[asyncpg.Connection] = []
        self._open = False

    async def open(self) -> None:
        if self._open:
            return
        try:
            async with self._connection() as conn, conn.transaction():
                # Serialize schema creation between consumers starting at the same time.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._table)
                for statement in self._schema():
                    await conn.execute(statement)
        except _ERRORS as exc:
            await self._close_idle()
            raise StoreError(f"cannot open the PostgreSQL store: {type(exc).__name__}") from exc
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self._close_idle()

    async def run_once(
        self, key: EventKey, work: Callable[[asyncpg.Connection], Awaitable[None]]
    ) -> bool:
        """See the module docstring: the id row and ``work``'s writes commit together."""
        self._require_open()
        async with self._connection() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f"INSERT INTO {self._table} (source, id) VALUES ($1, $2)"  # noqa: S608 (name checked)
                " ON CONFLICT DO NOTHING RETURNING true",
                *key,
            )
            if not inserted:
                return False
            await work(conn)
        return True

    async def run_batch(
        self, keys: Sequence[EventKey], work: Callable[[int, asyncpg.Connection], Awaitable[None]]
    ) -> BatchResult:
        """See the module docstring: one transaction, one claim round trip, one commit."""
        self._require_open()
        claim = sorted(set(keys))
        failure: tuple[int, Exception] | None = None
        ran: list[bool] = []
        try:
            async with self._connection() as conn:
                try:
                    async with conn.transaction():
                        rows = await conn.fetch(
                            f"INSERT INTO {self._table} (source, id)"  # noqa: S608 (name checked)
                            " SELECT * FROM unnest($1::text[], $2::text[])"
                            " ON CONFLICT DO NOTHING RETURNING source, id",
                            [k[0] for k in claim],
                            [k[1] for k in claim],
                        )
                        claimed = {(r[0], r[1]) for r in rows}
                        for i, key in enumerate(keys):
                            if key not in claimed:
                                ran.append(False)
                                continue
                            try:
                                await work(i, conn)
                            except StopBatch:
                                # release the claims of the keys not run, commit the others
                                await self._unclaim(conn, sorted(claimed))
                                break
                            except Exception as exc:
                                failure = (i, exc)
                                raise _RollBack from None
                            claimed.discard(key)  # a repeat later in the batch is a duplicate
                            ran.append(True)
                except _RollBack:
                    pass
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL store: {type(exc).__name__}: {exc}") from exc
        if failure is not None:
            return BatchResult([], failure[1], failure[0])
        return BatchResult(ran)

    async def _unclaim(self, conn: asyncpg.Connection, keys: Sequence[EventKey]) -> None:
        """Delete the rows of ``keys``, claimed (inserted) by this still-open batch transaction
        but not run: the transaction then commits only the keys whose work ran."""
        if not keys:
            return
        await conn.execute(
            f"DELETE FROM {self._table} WHERE (source, id) IN"  # noqa: S608 (name checked)
            " (SELECT * FROM unnest($1::text[], $2::text[]))",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )

    async def is_processed(self, key: EventKey) -> bool:
        row = await self._fetchval(
            f"SELECT true FROM {self._table} WHERE source = $1 AND id = $2",  # noqa: S608
            *key,
        )
        return bool(row)

    async def record_failure(self, key: EventKey) -> int:
        count = await self._fetchval(
            f"INSERT INTO {self._failures} (source, id, attempts) VALUES ($1, $2, 1)"  # noqa: S608
            " ON CONFLICT (source, id) DO UPDATE SET"
            f" attempts = {self._failures}.attempts + 1, updated_at = now()"
            " RETURNING attempts",
            *key,
        )
        return int(count)

    async def clear_failures(self, key: EventKey) -> None:
        await self._fetchval(
            f"DELETE FROM {self._failures} WHERE source = $1 AND id = $2",  # noqa: S608
            *key,
        )

    async def purge_expired(self) -> int:
        total = 0
        for table, column in ((self._table, "processed_at"), (self._failures, "updated_at")):
            count = await self._fetchval(
                f"WITH d AS (DELETE FROM {table}"  # noqa: S608 (names checked in __init__)
                f" WHERE {column} < now() - make_interval(secs => $1) RETURNING 1)"
                " SELECT count(*) FROM d",
                self._retention_s,
            )
            total += int(count)
        return total

    # -- internals ---------------------------------------------------------------------------

    def _schema(self) -> list[str]:
        t, f = self._table, self._failures
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (source text NOT NULL, id text NOT NULL,"
            " processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, id))",
            f"CREATE INDEX IF NOT EXISTS {t}_at ON {t} (processed_at)",
            f"CREATE TABLE IF NOT EXISTS {f} (source text NOT NULL, id text NOT NULL,"
            " attempts integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (source, id))",
        ]

    def _require_open(self) -> None:
        if not self._open:
            raise StoreError("PostgresStore is not open")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the store's own small pool (at most ``pool_size`` at once).

        Plain ``asyncpg.Connection`` objects (not pool proxies), so handlers can be typed with
        the class users know. A connection that broke is dropped; the next use opens a new one.
        """
        async with self._slots:
            conn = self._idle.pop() if self._idle else await asyncpg.connect(self._dsn)
            try:
                yield conn
            finally:
                if conn.is_closed() or conn.is_in_transaction():
                    conn.terminate()
                else:
                    self._idle.append(conn)

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(*_ERRORS):
                await conn.close(timeout=5)

    async def _fetchval(self, sql: str, *args: object) -> Any:
        self._require_open()
        try:
            async with self._connection() as conn:
                return await conn.fetchval(sql, *args)
        except _ERRORS as exc:
            raise StoreError(f"PostgreSQL store: {type(exc).__name__}: {exc}") from exc
