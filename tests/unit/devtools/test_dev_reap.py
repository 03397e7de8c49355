"""`mdm-broker dev` cleans up a Kafka JVM an earlier, SIGKILLed run left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from broker.devtools.dev import reap_stale_kafka


def test_only_our_kafka_jvms_listed_in_endpoints_are_killed(tmp_path: Path) -> None:
    # A stand-in whose command line looks like the launcher's JVM, and an unrelated process.
    fake_kafka = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", "/tmp/mdm-kafka-x/n"]
    )
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
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
