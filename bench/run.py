"""Benchmarks, each beside its peers measured in the same run on the same machine and Kafka.

``python -m bench.run [--quick] [--out bench/results/latest.json]`` (``make bench``,
``make bench-quick``). Machines here are noisy, so every figure is the median of alternating
rounds and is reported with its ratio to a peer measured in the same run:

* ``encode``: canonical event build + CloudEvents JSON encoding per notification, against a bare
  ``orjson.dumps`` of the raw vendor payload (the least any bridge must do).
* ``memory``: peak Python heap (tracemalloc) while building and encoding 10,000 events.
* ``publish``: :class:`KafkaPublisher` (acks=all, idempotent, bounded waits, metrics) publishing
  batches of 100, against a bare aiokafka producer sending the same bytes to the same partitions,
  and Kafka's own Java producer (ProducerPerformance, bench/kafka_perf.py) as the ceiling.
* ``consumer``: IdempotentConsumer with each store against a bare getmany loop (bench/consumer.py).
* ``http``: the Apple webhook under wrk, out of process, beside a bare aiohttp server and a
  hand-written FastAPI + aiokafka service, with every 2xx checked in Kafka (bench/http.py).

Kafka comes from ``KAFKA_BOOTSTRAP_SERVERS`` or the project's launcher (broker/devtools/devkafka.py);
PostgreSQL from ``POSTGRES_DSN`` or the test suite's throw-away cluster (tests/postgres_fixture.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.consumer import bench_consumer
from bench.http import bench_http
from bench.kafka_perf import producer_performance
from broker.devtools.devkafka import KafkaCluster
from broker.events import (
    KAFKA_HEADERS,
    AssignmentData,
    CanonicalEvent,
    EventType,
    Vendor,
    apple_key,
    encode_event,
    make_event,
)
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.topics import create_topics


def apple_notification(i: int, *, random_id: bool = False) -> dict[str, Any]:
    """Notification ``i``; its ``notificationId`` is ``UUID(int=i)``, or a random UUID."""
    return {
        "notification": {
            "assignments": [
                {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": f"SN{i:08d}"}
            ],
            "eventId": "954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
            "result": "SUCCESS",
            "type": "ASSOCIATE",
        },
        "notificationId": str(uuid.uuid4() if random_id else uuid.UUID(int=i)),
        "notificationType": "ASSET_MANAGEMENT",
        "uId": "2049025000431439",
    }


def build_event(raw: dict[str, Any]) -> CanonicalEvent:
    body = raw["notification"]
    return make_event(
        id=raw["notificationId"],
        vendor=Vendor.APPLE,
        tenant=raw["uId"],
        type=EventType.ASSIGNMENT_ASSOCIATED,
        vendortype="ASSET_MANAGEMENT/ASSOCIATE",
        partitionkey=apple_key(raw["uId"]),
        data=AssignmentData.model_validate(
            {
                "raw": raw,
                "event_id": body["eventId"],
                "result": body["result"],
                "assignments": [
                    {
                        "adam_id": a["adamId"],
                        "pricing_param": a.get("pricingParam"),
                        "serial_number": a.get("serialNumber"),
                    }
                    for a in body["assignments"]
                ],
            }
        ),
        time=datetime.now(UTC),
    )


def _rounds(fn: Callable[[], float], rounds: int) -> list[float]:
    return [fn() for _ in range(rounds)]


def bench_encode(n: int, rounds: int) -> dict[str, Any]:
    raws = [apple_notification(i) for i in range(n)]

    def ours() -> float:
        start = time.perf_counter()
        for raw in raws:
            encode_event(build_event(raw))
        return n / (time.perf_counter() - start)

    def baseline() -> float:
        start = time.perf_counter()
        for raw in raws:
            orjson.dumps(raw)
        return n / (time.perf_counter() - start)

    ours_runs, base_runs = [], []
    for _ in range(rounds):  # interleaved so drift affects both alike
        ours_runs += _rounds(ours, 1)
        base_runs += _rounds(baseline, 1)
    ours_median, base_median = statistics.median(ours_runs), statistics.median(base_runs)
    return {
        "unit": "events/s",
        "n": n,
        "rounds": rounds,
        "ours_median": round(ours_median),
        "baseline_median": round(base_median),
        "ratio": round(ours_median / base_median, 4),
        "baseline": "orjson.dumps(raw vendor payload)",
    }


def bench_memory(n: int) -> dict[str, Any]:
    """Peak heap while streaming ``n`` notifications through build+encode (nothing retained),
    and the wire size of an event against its raw payload."""
    raws = [apple_notification(i) for i in range(n)]

    def peak(fn: Callable[[dict[str, Any]], bytes]) -> tuple[int, int]:
        tracemalloc.start()
        size = 0
        for raw in raws:
            size += len(fn(raw))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, size

    ours_peak, ours_bytes = peak(lambda raw: encode_event(build_event(raw)))
    base_peak, base_bytes = peak(orjson.dumps)
    return {
        "unit": "bytes",
        "n": n,
        "ours_peak_heap": ours_peak,
        "baseline_peak_heap": base_peak,
        "peak_ratio": round(ours_peak / base_peak, 4),
        "ours_wire_bytes_per_event": round(ours_bytes / n),
        "baseline_wire_bytes_per_event": round(base_bytes / n),
        "wire_ratio": round(ours_bytes / base_bytes, 4),
        "baseline": "orjson.dumps(raw vendor payload), streamed",
    }


async def bench_publish(bootstrap: str, n: int, batch: int, rounds: int) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        dlq_topic=f"{prefix}.dlq",
        state_topic=f"{prefix}.state",
        partitions=6,
    )
    await create_topics(settings)
    events = [build_event(apple_notification(i)) for i in range(n)]
    payloads = [(e.partitionkey.encode(), encode_event(e)) for e in events]

    async def ours() -> tuple[float, float]:
        async with KafkaPublisher(settings, KafkaHealth(), BrokerMetrics()) as publisher:
            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(
                *(publisher.publish(events[i : i + batch]) for i in range(0, n, batch))
            )
            return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6

    async def baseline() -> tuple[float, float]:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(settings.linger_s * 1000),
            max_batch_size=settings.max_batch_bytes,
        )
        await producer.start()
        try:
            start, cpu = time.perf_counter(), time.process_time()
            futures = [
                await producer.send(settings.events_topic, value=v, key=k, headers=KAFKA_HEADERS)
                for k, v in payloads
            ]
            await asyncio.gather(*futures)
            return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6
        finally:
            await producer.stop()

    record_size = round(statistics.mean(len(v) for _, v in payloads))

    def java() -> float:
        result = producer_performance(
            bootstrap,
            settings.events_topic,
            n,
            record_size,
            int(settings.linger_s * 1000),
            settings.max_batch_bytes,
        )
        return float(result["records_per_s"])

    ours_runs, base_runs, java_runs = [], [], []
    for _ in range(rounds):
        ours_runs.append(await ours())
        base_runs.append(await baseline())
        java_runs.append(java())
    ours_median = statistics.median(r for r, _ in ours_runs)
    base_median = statistics.median(r for r, _ in base_runs)
    ours_cpu = statistics.median(c for _, c in ours_runs)
    base_cpu = statistics.median(c for _, c in base_runs)
    java_median = statistics.median(java_runs)
    return {
        "unit": "events/s acked by Kafka",
        "n": n,
        "batch": batch,
        "rounds": rounds,
        "partitions": settings.partitions,
        "record_bytes": record_size,
        "ours_median": round(ours_median),
        "baseline_median": round(base_median),
        "kafka_java_median": round(java_median),
        "ratio": round(ours_median / base_median, 4),
        "ratio_to_kafka_java": round(ours_median / java_median, 4),
        "ours_cpu_us_per_event": round(ours_cpu, 1),
        "baseline_cpu_us_per_event": round(base_cpu, 1),
        "cpu_ratio": round(base_cpu / ours_cpu, 4),
        "baseline": "bare AIOKafkaProducer, acks=all, idempotent, same bytes (value, key and "
        "content-type header) and partitions, sent one record after the other and gathered; "
        "it gets the encoded bytes ready, while ours encodes each event (encode_event) inside "
        "the timed publish",
        "ceiling": "Kafka's ProducerPerformance (Java), acks=all, idempotent, same size/linger",
    }


@contextmanager
def kafka() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with KafkaCluster(nodes=1, heap_mb=1024) as cluster:
        yield cluster.bootstrap_servers


@contextmanager
def postgres() -> Iterator[str | None]:
    """``POSTGRES_DSN``, else the test suite's throw-away cluster, else None (variant skipped)."""
    external = os.environ.get("POSTGRES_DSN")
    if external:
        yield external
        return
    try:
        from tests.postgres_fixture import postgres_server
    except ImportError:
        yield None
        return
    try:
        server = postgres_server()
        dsn = server.__enter__()
    except Exception as exc:  # no PostgreSQL here: say so in the results, go on
        print(f"  (no PostgreSQL: {exc}; the postgres consumer variant is skipped)", flush=True)
        yield None
        return
    try:
        yield dsn
    finally:
        server.__exit__(None, None, None)


def _commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(results: dict[str, Any]) -> str:
    """The results as a plain-text table (what ``make bench`` prints)."""
    rows: list[tuple[str, str, str, str]] = []
    if "publish" in results:
        p = results["publish"]
        rows.append(("publish: KafkaPublisher", f"{p['ours_median']:,} ev/s", "", ""))
        rows.append(("publish: bare aiokafka", f"{p['baseline_median']:,} ev/s", "", ""))
        rows.append(("publish: Kafka Java producer", f"{p['kafka_java_median']:,} ev/s", "", ""))
        rows.append(
            (
                "  ours / bare aiokafka",
                f"{p['ratio']:.2f}x",
                f"cpu {p.get('cpu_ratio', 0):.2f}x",
                f"{p.get('ours_cpu_us_per_event', 0)} vs "
                f"{p.get('baseline_cpu_us_per_event', 0)} us CPU/event",
            )
        )
    if "consumer" in results:
        c = results["consumer"]
        for name, value in c["medians"].items():
            cpu = c["per_cpu_s_ratios"][name]
            rows.append(
                (f"consumer: {name}", f"{value:,} ev/s", f"{c['ratios'][name]:.2f}x", f"cpu {cpu}x")
            )
    if "http" in results:
        h = results["http"]
        for level in ("c32", "c4"):
            if level not in h:
                continue
            for name, m in h[level]["medians"].items():
                rows.append(
                    (
                        f"webhook {level}: {name}",
                        f"{m['req_per_s']:,.0f} req/s",
                        f"p50 {m['p50_ms']:.1f} ms  p99 {m['p99_ms']:.1f} ms",
                        f"{m['cpu_us_per_req']:.0f} us CPU/req",
                    )
                )
            rows.append(
                (
                    f"  broker / bare, / fastapi ({level})",
                    f"{h[level]['broker_vs_bare']:.2f}x",
                    f"{h[level]['broker_vs_fastapi']:.2f}x",
                    "",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument(
        "--only",
        choices=("encode", "memory", "publish", "consumer", "http"),
        action="append",
        help="run only these benchmarks (repeatable)",
    )
    args = parser.parse_args(argv)
    only = set(args.only or ("encode", "memory", "publish", "consumer", "http"))
    n = 2_000 if args.quick else 20_000
    rounds = 1 if args.quick else 5
    results: dict[str, Any] = {
        "machine": _machine(),
        "source": _commit(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "2-core machine shared with other workloads: absolute figures vary from run to "
        "run; compare the same-run ratios (medians of alternating rounds)",
    }
    if "encode" in only:
        print(f"encode: {n} events x {rounds} rounds ...", flush=True)
        results["encode"] = bench_encode(n, rounds)
    if "memory" in only:
        print("memory: 10,000 events ...", flush=True)
        results["memory"] = bench_memory(10_000)
    with kafka() as bootstrap:
        if "publish" in only:
            print(f"publish: {n} events x {rounds} rounds, Kafka {bootstrap} ...", flush=True)
            results["publish"] = asyncio.run(bench_publish(bootstrap, n, 100, rounds))
        if "consumer" in only:
            consumer_n = 2_000 if args.quick else 50_000
            print(f"consumer: {consumer_n} events x {rounds} rounds per variant ...", flush=True)
            with postgres() as dsn:
                results["consumer"] = asyncio.run(
                    bench_consumer(
                        bootstrap,
                        consumer_n,
                        rounds,
                        lambda k: [build_event(apple_notification(i)) for i in range(k)],
                        dsn,
                        lambda k: [
                            build_event(apple_notification(i, random_id=True)) for i in range(k)
                        ],
                    )
                )
        if "http" in only:
            duration = 3 if args.quick else 15
            levels = (32,) if args.quick else (32, 4)
            print(f"http: wrk {duration}s x {rounds} rounds x {levels} ...", flush=True)
            results["http"] = bench_http(bootstrap, rounds, duration, levels)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
