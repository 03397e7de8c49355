"""Google Play EMM at a sustained offered rate: missed ack deadlines and arrival -> ack latency.

``python -m bench.android [--rate 5000] [--seconds 60] [--set-size 1000] [--pullers N]``: the
EMM simulator (simulators/android, its own aiohttp server) runs in a **process of its own** and
offers ``--rate`` notifications per second, in sets of up to ``--set-size``; the broker (BrokerApp
with the Android adapter at its defaults, real Kafka) runs in this process: it pulls, publishes and
acknowledges. Reported: notifications offered and acked, sets whose ack deadline passed (expired,
late acks), the arrival -> ack latency of every notification (from its enqueue in the simulator
to the ack of its set, both on the simulator's clock; the broker acks only after Kafka acked the
set's events), p50/p99/max, and the broker process's CPU time per notification. The broker's
process is set up as ``mdm-broker run`` sets up its own: uvloop when installed, the start-up heap
frozen once started (broker/app/heap.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from adapters.android.normalize import notification_id
from adapters.android.settings import AndroidSettings
from bench.run import _commit, _machine, kafka
from broker import eventloop
from broker.app.config import BrokerSettings
from broker.app.heap import settle_after_startup
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.android.auth import AuthState
from simulators.android.keys import generate_service_account
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import EmmSimulator, SimulatorConfig

ACCOUNT = "broker@sim-project.iam.gserviceaccount.com"
DRAIN_TIMEOUT_S = 60.0


# -- the simulator's process ---------------------------------------------------------------------


async def _offer(sim: EmmSimulator, rate: float, seconds: float, enqueued: dict[str, float]) -> int:
    """Enqueue ``rate`` notifications per second for ``seconds``, in 20 ms steps."""
    step = 0.02
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * min(elapsed + step, seconds)) - sent
        if due > 0:
            batch = generate(due, enterprises=5, first_seq=sent)
            now = time.monotonic()
            for n in batch:
                enqueued[notification_id(n)] = now
            sim.pool.enqueue(batch)
            sent += due
        await asyncio.sleep(max(0.0, start + elapsed + step - time.monotonic()))
    return sent


async def _drained(sim: EmmSimulator, offered: int, timeout_s: float) -> None:
    """Return once every offered notification was acked, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s * 10)):
        if sim.pool.stats.acked_notifications >= offered or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


def _summary(sim: EmmSimulator, offered: int, enqueued: dict[str, float]) -> dict[str, Any]:
    latencies = sorted(
        record.acked_at - enqueued[notification_id(n)]
        for record in sim.pool.acked
        for n in record.notifications
        if notification_id(n) in enqueued
    )
    stats = sim.pool.stats

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "offered": offered,
        "acked": stats.acked_notifications,
        "acked_sets": stats.acked_sets,
        "mean_set_size": round(stats.acked_notifications / max(stats.acked_sets, 1), 1),
        "missed_ack_deadlines": stats.expired_sets + stats.late_acks,
        "redelivered": stats.redelivered_notifications,
        "arrival_to_ack_ms": {
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(statistics.mean(latencies) * 1000, 1) if latencies else None,
        },
    }


async def _serve_simulator(conn: Connection, set_size: int, email: str, pem: str) -> None:
    auth = AuthState()
    auth.accounts[email] = [pem]
    sim = EmmSimulator(
        SimulatorConfig(hold_s=1.0, max_set_size=set_size, rate_limit_qpm=None), auth
    )
    async with SimulatorServer(sim) as server:
        conn.send((server.token_url, server.api_base_url))
        rate, seconds = await asyncio.to_thread(conn.recv)
        enqueued: dict[str, float] = {}
        cpu = time.process_time()
        offered = await _offer(sim, rate, seconds, enqueued)
        await _drained(sim, offered, DRAIN_TIMEOUT_S)
        summary = _summary(sim, offered, enqueued)
        summary["simulator_cpu_s"] = round(time.process_time() - cpu, 2)
        conn.send(summary)
        await asyncio.to_thread(conn.recv)  # the broker has stopped: close the server


def _simulator_process(conn: Connection, set_size: int, email: str, pem: str) -> None:
    """Entry point of the simulator's process: serve, offer on request, report, stop."""
    asyncio.run(_serve_simulator(conn, set_size, email, pem))


# -- the broker's process (this one) -------------------------------------------------------------


class _GcPauses:
    """``gc.callbacks`` hook: the broker's garbage-collection pauses (they stall every puller)."""

    def __init__(self) -> None:
        self.started = self.started_cpu = 0.0
        self.total_s = self.cpu_s = 0.0
        self.longest_s = 0.0
        self.collections = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started, self.started_cpu = time.perf_counter(), time.process_time()
            return
        pause = time.perf_counter() - self.started
        self.total_s += pause
        self.cpu_s += time.process_time() - self.started_cpu
        self.longest_s = max(self.longest_s, pause)
        self.collections[info["generation"]] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "total_s": round(self.total_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "longest_ms": round(self.longest_s * 1000, 1),
            "collections_by_generation": self.collections,
        }


async def run(
    bootstrap: str, rate: float, seconds: float, set_size: int, pullers: int | None = None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-android-"))
    doc, pem = generate_service_account()
    key = workdir / "sa.json"
    key.write_bytes(orjson.dumps(doc))
    prefix = f"benchemm{uuid.uuid4().hex[:6]}"
    kafka_settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        dlq_topic=f"{prefix}.dlq",
        state_topic=f"{prefix}.state",
        partitions=6,
    )
    await create_topics(kafka_settings)
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    simulator = multiprocessing.get_context("spawn").Process(
        target=_simulator_process,
        args=(theirs, set_size, doc.get("client_email", ACCOUNT), pem),
        name="emm-simulator",
    )
    simulator.start()
    try:
        token_url, api_base_url = await asyncio.to_thread(ours.recv)
        android = AndroidSettings(
            enabled=True,
            service_account_file=key,
            token_url=token_url,
            api_base_url=api_base_url,
            **({} if pullers is None else {"pullers": pullers}),
        )
        settings = BrokerSettings(
            kafka=kafka_settings, http={"host": "127.0.0.1", "port": 0}, android=android
        )
        app = BrokerApp(settings, factories=factories(settings, ["android"]))
        await app.start()
        settle_after_startup()  # as `mdm-broker run` does once started
        pauses = _GcPauses()
        gc.callbacks.append(pauses)
        try:
            cpu = time.process_time()
            ours.send((rate, seconds))
            summary: dict[str, Any] = await asyncio.to_thread(ours.recv)
            broker_cpu = time.process_time() - cpu
        finally:
            gc.callbacks.remove(pauses)
            await app.stop()
        ours.send("stop")
        await asyncio.to_thread(simulator.join, 30)
    finally:
        if simulator.is_alive():
            simulator.kill()
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "max_set_size": set_size,
        "pullers": android.pullers,
        **summary,
        "broker_cpu_s": round(broker_cpu, 2),
        "broker_gc": pauses.summary(),
        "broker_cpu_us_per_notification": round(broker_cpu / max(summary["acked"], 1) * 1e6, 1),
        "simulator": "own process (multiprocessing spawn), same machine",
    }


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of what decides the target: missed deadlines, p50/p99, CPU."""

    def median(values: list[Any]) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), 1) if present else None

    return {
        "missed_ack_deadlines": median([r["missed_ack_deadlines"] for r in rounds]),
        "arrival_to_ack_p50_ms": median([r["arrival_to_ack_ms"]["p50"] for r in rounds]),
        "arrival_to_ack_p99_ms": median([r["arrival_to_ack_ms"]["p99"] for r in rounds]),
        "broker_cpu_us_per_notification": median(
            [r["broker_cpu_us_per_notification"] for r in rounds]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.android", description=__doc__)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--set-size", type=int, default=1000)
    parser.add_argument("--pullers", type=int, default=None, help="default: android.pullers")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs in a row (fresh topics, simulator); medians"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/android.json"))
    args = parser.parse_args(argv)
    rounds: list[dict[str, Any]] = []
    with kafka() as bootstrap:
        for _ in range(args.rounds):
            rounds.append(
                eventloop.run(run(bootstrap, args.rate, args.seconds, args.set_size, args.pullers))
                | {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
            )
            print(orjson.dumps(rounds[-1]).decode(), flush=True)
    result = {
        "median": _medians(rounds),
        "rounds": rounds,
        "machine": _machine(),
        "source": _commit(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(orjson.dumps(result["median"]).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
