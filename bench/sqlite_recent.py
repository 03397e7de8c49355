"""SQLiteStore's schema against a schema for random ids (``python -m bench.sqlite_recent``).

The question (issue 14): SQLite dirties one page of the ``processed`` B-tree per new random id,
so would a small table of recent ids, appended in arrival order and merged sorted into
``processed`` in bulk, cost less per id? Both schemes record ``--ids`` ids in batches of
``--batch``, on a database that already holds ``--prefill`` random ids, in alternating rounds,
and the medians of CPU (this process: SQLite runs in it) and wall microseconds per id are printed.
No Kafka, no event loop.

* ``store``: :class:`~broker.consumer.SQLiteStore`'s own statements and pragmas (``_lookup``,
  ``_record``: one ``IN`` lookup, one ``executemany`` into ``processed``, one commit per batch).
* ``recent``: the sketch, as the prototype on branch ``sqlite5-recent-prototype`` built it: a
  batch is looked up in an in-memory copy of ``recent`` (refreshed from the table first, as other
  processes may append) and in ``processed``, then appended to ``recent`` (``INTEGER PRIMARY KEY
  AUTOINCREMENT``); every ``--recent-max`` ids one transaction moves ``recent`` into
  ``processed`` (``INSERT ... SELECT ... GROUP BY source, id``, i.e. sorted) and empties it. The
  ids still in ``recent`` at the end are merged inside the measurement: every id's whole cost.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from broker.consumer.sqlite_store import (
    _SCHEMA,
    _WAL_AUTOCHECKPOINT_PAGES,
    DEFAULT_CACHE_MIB,
    _lookup,
    _record,
)

SOURCE = "/apple/locations/bench-location"
_RECENT = (
    "CREATE TABLE recent (n INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,"
    " id TEXT NOT NULL, processed_at REAL NOT NULL)"
)
_MERGE = (
    "INSERT INTO processed (source, id, processed_at)"
    " SELECT source, id, max(processed_at) FROM recent WHERE true GROUP BY source, id"
    " ON CONFLICT (source, id) DO UPDATE SET processed_at = max(processed_at, excluded.processed_at)"
)


def _open(path: Path, prefill: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA cache_size=-{DEFAULT_CACHE_MIB * 1024}")
    for statement in (*_SCHEMA, _RECENT):
        conn.execute(statement)
    old = time.time() - 3600
    rows = sorted((SOURCE, str(uuid.uuid4()), old) for _ in range(prefill))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO processed VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn


def _store(conn: sqlite3.Connection, batches: list[list[str]], recent_max: int) -> None:
    for ids in batches:
        keys = [(SOURCE, id_) for id_ in ids]
        _lookup(conn, keys, 0.0)
        _record(conn, [(SOURCE, id_, time.time()) for id_ in ids])


def _recent(conn: sqlite3.Connection, batches: list[list[str]], recent_max: int) -> None:
    copy: dict[tuple[str, str], float] = {}
    seen = 0
    pending = 0
    for ids in batches:
        conn.execute("BEGIN")
        for n, source, id_, at in conn.execute(
            "SELECT n, source, id, processed_at FROM recent WHERE n > ?", (seen,)
        ):
            copy[(source, id_)] = at
            seen = n
        others = [id_ for id_ in ids if (SOURCE, id_) not in copy]
        marks = ", ".join("?" * len(others))
        conn.execute(
            f"SELECT id FROM processed WHERE source = ? AND id IN ({marks})",  # noqa: S608
            (SOURCE, *others),
        ).fetchall()
        conn.execute("COMMIT")
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO recent (source, id, processed_at) VALUES (?, ?, ?)",
            [(SOURCE, id_, now) for id_ in ids],
        )
        conn.execute("COMMIT")
        pending += len(ids)
        if pending >= recent_max or ids is batches[-1]:
            conn.execute("BEGIN")
            conn.execute(_MERGE)
            conn.execute("DELETE FROM recent")
            conn.execute("COMMIT")
            copy.clear()
            pending = 0


_SCHEMES: dict[str, Callable[[sqlite3.Connection, list[list[str]], int], None]] = {
    "store": _store,
    "recent": _recent,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=50_000, help="ids recorded per round")
    parser.add_argument("--prefill", type=int, default=0, help="random ids already recorded")
    parser.add_argument("--batch", type=int, default=500, help="ids per batch (consumer default)")
    parser.add_argument("--recent-max", type=int, default=25_000, help="ids per merge")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", action="store_true", help="UUID(int=i) ids, not random")
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in _SCHEMES}
    with tempfile.TemporaryDirectory(prefix="mdm-bench-recent-") as tmp:
        for r in range(args.rounds):
            for name, scheme in _SCHEMES.items():
                if args.sequential:
                    ids = [str(uuid.UUID(int=args.prefill + i)) for i in range(args.ids)]
                else:
                    ids = [str(uuid.uuid4()) for _ in range(args.ids)]
                batches = [ids[i : i + args.batch] for i in range(0, len(ids), args.batch)]
                conn = _open(Path(tmp) / f"{name}{r}.db", args.prefill)
                try:
                    wall0, cpu0 = time.perf_counter(), time.process_time()
                    scheme(conn, batches, args.recent_max)
                    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                finally:
                    conn.close()
                results[name].append((cpu / args.ids * 1e6, wall / args.ids * 1e6))
    kind = "sequential" if args.sequential else "random"
    print(
        f"{args.ids:,} {kind} ids after {args.prefill:,}, batches of {args.batch}, "
        f"merge every {args.recent_max:,}, {args.rounds} rounds (medians):"
    )
    for name, runs in results.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(f"  {name:>6}: {cpu:6.1f} us CPU, {wall:6.1f} us wall per id")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
