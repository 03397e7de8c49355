"""Kafka's own producer (``org.apache.kafka.tools.ProducerPerformance``) as the Kafka ceiling.

The kafka-tools jar and its dependencies come from Maven Central (bench/kafka-tools/pom.xml, the
same Kafka version as the broker the benchmarks start), cached in ~/.cache/mdm-broker. The run
uses the broker's producer settings (``acks=all``, idempotent, its linger and batch size) and the
same record size as the publish benchmark.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from broker.devtools.devkafka import KAFKA_VERSION, cache_dir

POM = Path(__file__).resolve().parent / "kafka-tools" / "pom.xml"
_RESULT = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency"
)


def ensure_tools_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of the kafka-tools jars, fetched with Maven on first use."""
    libs = cache_dir() / f"kafka-tools-{version}"
    if any(libs.glob("kafka-tools-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is required to fetch kafka-tools; install it")
    build = cache_dir() / f"kafka-tools-{version}-build"
    build.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(POM, build / "pom.xml")
    subprocess.run(
        [mvn, "-B", "-q", "-f", str(build / "pom.xml"), "package",
         f"-Dkafka.version={version}", f"-Dkafka.libs.dir={libs}"],
        check=True,
    )  # fmt: skip
    return libs


def producer_performance(
    bootstrap: str, topic: str, records: int, record_size: int, linger_ms: int, batch_bytes: int
) -> dict[str, Any]:
    """One ProducerPerformance run; records/s and its average latency."""
    libs = ensure_tools_jars()
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is required for ProducerPerformance")
    out = subprocess.run(
        [
            java, "-Xmx256m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
            "--topic", topic, "--num-records", str(records), "--record-size", str(record_size),
            "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}",
            "acks=all", "enable.idempotence=true", f"linger.ms={linger_ms}",
            f"batch.size={batch_bytes}",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    matches = list(_RESULT.finditer(out.stdout))  # the last line is the total
    match = matches[-1] if matches else None
    if match is None:
        raise RuntimeError(f"unexpected ProducerPerformance output:\n{out.stdout[-2000:]}")
    return {"records_per_s": float(match.group(2)), "avg_latency_ms": float(match.group(4))}
