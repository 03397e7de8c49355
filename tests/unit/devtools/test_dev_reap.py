"""`mdm-broker dev` cleans up a Kafka JVM an earlier, SIGKILLed run left behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

from broker.devtools.dev import reap_stale_kafka


def _wait_for_argv(pid: int, marker: bytes) -> None:
    """Wait until ``pid`` shows its new argv: the kernel closes Popen's exec pipe before it maps
    the new command line, so ``/proc/<pid>/cmdline`` can read empty for a moment after Popen."""
    deadline = time.monotonic() + 10
    while marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, f"pid {pid} never showed {marker!r} in its cmdline"
        time.sleep(0.01)


def test_only_our_kafka_jvms_listed_in_endpoints_are_killed(tmp_path: Path) -> None:
    # A stand-in whose command line looks like the launcher's JVM, and an unrelated process.
    fake_kafka = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", "/tmp/mdm-kafka-x/n"]
    )
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _wait_for_argv(fake_kafka.pid, b"kafka.Kafka")
        _wait_for_argv(unrelated.pid, b"time.sleep")
        (tmp_path / "endpoints.json").write_bytes(
            orjson.dumps({"kafka_pids": [fake_kafka.pid, unrelated.pid, 999_999_999]})
        )
        assert reap_stale_kafka(tmp_path) == [fake_kafka.pid]
        assert fake_kafka.wait(timeout=10) != 0
        assert unrelated.poll() is None
    finally:
        for proc in (fake_kafka, unrelated):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_no_previous_run_reaps_nothing(tmp_path: Path) -> None:
    assert reap_stale_kafka(tmp_path) == []
    (tmp_path / "endpoints.json").write_text("not json")
    assert reap_stale_kafka(tmp_path) == []
