"""bench/sqlite_recent.py works (not its numbers): both schemes record every id, the ``recent``
scheme ends with its ids merged into ``processed``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import sqlite_recent


@pytest.mark.parametrize("sequential", [False, True])
def test_both_schemes_run_and_print_a_row(
    sequential: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--ids", "1000", "--batch", "100", "--recent-max", "300", "--rounds", "1"]
    assert sqlite_recent.main([*argv, "--prefill", "200", *(["--sequential"] * sequential)]) == 0
    out = capsys.readouterr().out
    assert "store:" in out
    assert "recent:" in out


@pytest.mark.parametrize("scheme", sorted(sqlite_recent._SCHEMES))
def test_every_id_ends_in_processed(scheme: str, tmp_path: Path) -> None:
    conn = sqlite_recent._open(tmp_path / "s.db", prefill=50)
    try:
        ids = [f"id-{i}" for i in range(250)]
        sqlite_recent._SCHEMES[scheme](conn, [ids[i : i + 100] for i in range(0, 250, 100)], 120)
        recorded = {row[0] for row in conn.execute("SELECT id FROM processed")}
        left = conn.execute("SELECT count(*) FROM recent").fetchone()[0]
    finally:
        conn.close()
    assert set(ids) <= recorded
    assert len(recorded) == 300
    assert left == 0
