"""Benchmarks, each beside a baseline measured in the same run on the same machine.

``python -m bench.run [--quick] [--out bench/results/latest.json]``

Machines here are noisy, so every figure is the median of several rounds and is reported with the
ratio to its baseline (ours / baseline):

* ``encode``: canonical event build + CloudEvents JSON encoding per notification, against a bare
  ``orjson.dumps`` of the raw vendor payload (the least any bridge must do).
* ``publish``: :class:`KafkaPublisher` (acks=all, idempotent, bounded waits, metrics) publishing
  batches of 100, against a bare aiokafka producer sending the same bytes with ``acks=all``.
* ``webhook``: Apple webhook end to end (POST -> Kafka ack -> 2xx) against a bare aiohttp
  handler answering 200 (see bench/webhook.py).
* ``memory``: peak Python heap (tracemalloc) while building and encoding 10,000 events.

Kafka comes from ``KAFKA_BOOTSTRAP_SERVERS`` or the project's launcher (broker/devtools/devkafka.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
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

from bench.webhook import bench_webhook
from broker.devtools.devkafka import KafkaCluster
from broker.events import (
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


def apple_notification(i: int) -> dict[str, Any]:
    return {
        "notification": {
            "assignments": [
                {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": f"SN{i:08d}"}
            ],
            "eventId": "954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
            "result": "SUCCESS",
            "type": "ASSOCIATE",
        },
        "notificationId": str(uuid.UUID(int=i)),
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

    async def ours() -> float:
        async with KafkaPublisher(settings, KafkaHealth(), BrokerMetrics()) as publisher:
            start = time.perf_counter()
            await asyncio.gather(
                *(publisher.publish(events[i : i + batch]) for i in range(0, n, batch))
            )
            return n / (time.perf_counter() - start)

    async def baseline() -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(settings.linger_s * 1000),
            max_batch_size=settings.max_batch_bytes,
        )
        await producer.start()
        try:
            start = time.perf_counter()
            futures = [
                await producer.send(settings.events_topic, value=v, key=k) for k, v in payloads
            ]
            await asyncio.gather(*futures)
            return n / (time.perf_counter() - start)
        finally:
            await producer.stop()

    ours_runs, base_runs = [], []
    for _ in range(rounds):
        ours_runs.append(await ours())
        base_runs.append(await baseline())
    ours_median, base_median = statistics.median(ours_runs), statistics.median(base_runs)
    return {
        "unit": "events/s acked by Kafka",
        "n": n,
        "batch": batch,
        "rounds": rounds,
        "ours_median": round(ours_median),
        "baseline_median": round(base_median),
        "ratio": round(ours_median / base_median, 4),
        "baseline": "bare AIOKafkaProducer, acks=all, idempotent, same bytes",
    }


@contextmanager
def kafka() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with KafkaCluster(nodes=1, heap_mb=1024) as cluster:
        yield cluster.bootstrap_servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else 20_000
    rounds = 3 if args.quick else 5
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"encode: {n} events x {rounds} rounds ...", flush=True)
    results["encode"] = bench_encode(n, rounds)
    print(f"  {results['encode']}", flush=True)
    print("memory: 10,000 events ...", flush=True)
    results["memory"] = bench_memory(10_000)
    print(f"  {results['memory']}", flush=True)
    with kafka() as bootstrap:
        print(f"publish: {n} events x {rounds} rounds against Kafka {bootstrap} ...", flush=True)
        results["publish"] = asyncio.run(bench_publish(bootstrap, n, 100, rounds))
        print(f"  {results['publish']}", flush=True)
        webhook_n = n // 4
        print(f"webhook: {webhook_n} Apple notifications x {rounds} rounds ...", flush=True)
        results["webhook"] = asyncio.run(bench_webhook(bootstrap, webhook_n, rounds))
        print(f"  {results['webhook']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
