"""SQLiteStore's own statements with random ids, by page-cache size (``python -m bench.sqlite_cache``).

Records ``--ids`` random notification ids in batches of ``--batch`` with the store's lookup and
insert (``_lookup``, ``_record``: one ``IN`` lookup, one ``executemany``, one commit per batch)
and the store's pragmas, once per cache size, and prints the wall and CPU microseconds per id over
the last quarter of the ids (the table is largest there). No Kafka, no event loop: the cost of
the B-tree work alone, which is what the page cache changes.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from broker.consumer.sqlite_store import _SCHEMA, _WAL_AUTOCHECKPOINT_PAGES, _lookup, _record

SOURCE = "apple:bench"


def per_id_cost(cache_kib: int | None, ids: int, batch: int, workdir: Path) -> tuple[float, float]:
    """(wall, CPU) microseconds per id over the last quarter of ``ids``; None: SQLite's cache."""
    conn = sqlite3.connect(workdir / f"cache{cache_kib}.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{cache_kib}")
        for statement in _SCHEMA:
            conn.execute(statement)
        batches = ids // batch
        measured_from = batches * 3 // 4
        wall = cpu = 0.0
        for n in range(batches):
            keys = [(SOURCE, str(uuid.uuid4())) for _ in range(batch)]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            _lookup(conn, keys, 0.0)
            _record(conn, [(source, id_, time.time()) for source, id_ in keys])
            if n >= measured_from:
                wall += time.perf_counter() - wall0
                cpu += time.process_time() - cpu0
        measured = (batches - measured_from) * batch
        return wall / measured * 1e6, cpu / measured * 1e6
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=200_000, help="ids recorded per cache size")
    parser.add_argument("--batch", type=int, default=500, help="ids per batch (consumer default)")
    parser.add_argument(
        "--cache-mib", type=int, nargs="*", default=[64, 256], help="cache sizes besides SQLite's"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mdm-bench-sqlite-") as tmp:
        for mib in [None, *args.cache_mib]:
            wall, cpu = per_id_cost(
                None if mib is None else mib * 1024, args.ids, args.batch, Path(tmp)
            )
            name = "SQLite default (2 MiB)" if mib is None else f"{mib} MiB"
            print(f"{name:>24}: {wall:6.1f} us wall, {cpu:6.1f} us CPU per id (last quarter)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
