"""Kapua poller request cost: vendor requests per published notification, requests/s and CPU at
100, 1,000 and 10,000 watched operations, against the Kapua simulator in its own process.

What runs: the broker's real ``PollScheduler`` + ``OperationPoller`` + ``KapuaClient`` (HTTP to the
simulator, auth, rate limit), with the operations handed over as if loaded from the state topic.
What does not: Kafka. Events and state records go to counting fakes, because the question is how
many requests the poller sends to Kapua per notification it publishes, which Kafka does not
change; discovery (a fixed cost per ``discovery_interval_s``) is not included either.

Load: every operation emits one progress row every ``--step-interval-s`` (+- jitter), for longer
than the run (steady state: nothing closes). After ``--warmup-s`` (adaptive intervals settle) the
poller's requests (``mdm_broker_kapua_poll_requests_total``), its published events and the CPU of
both processes are measured for ``--measure-s``.

    python -m bench.kapua_requests                 # 100, 1,000, 10,000 operations
    python -m bench.kapua_requests --quick         # 100 and 1,000, short (smoke run)

Results: ``bench/results/kapua_requests.json`` (machine, load average, commit, settings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from adapters.kapua.client import KapuaClient
from adapters.kapua.cursors import op_key, record_key, watch_value
from adapters.kapua.metrics import KapuaMetrics
from adapters.kapua.poller import OperationPoller
from adapters.kapua.scheduler import PollScheduler
from adapters.kapua.settings import KapuaSettings
from adapters.kapua.statestore import StateStore
from broker.devtools.devkafka import free_port
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.settings import KafkaSettings
from broker.state import StateWriter

RESULTS = Path(__file__).parent / "results" / "kapua_requests.json"
DEVICES = 100


class CountingSink:
    """Stands in for the Kafka publisher: counts what would be published."""

    def __init__(self) -> None:
        self.events = 0
        self.dead_letters = 0

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        self.events += len(events)

    async def dead_letter(self, payload: bytes, **_: Any) -> None:
        self.dead_letters += 1


class CountingStore(StateStore):
    """Stands in for the state topic: counts cursor and done writes."""

    writes = 0

    async def put(self, operation_key: str, kind: str, value: dict[str, Any]) -> None:
        self.writes += 1

    async def delete(self, operation_key: str, kinds: tuple[str, ...] = ()) -> None:
        self.writes += 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_sent(registry: CollectorRegistry) -> float:
    return sum(
        s.value
        for metric in registry.collect()
        if metric.name == "mdm_broker_kapua_poll_requests"
        for s in metric.samples
        if s.name.endswith("_total")
    )


async def start_simulator(port: int, step_interval_s: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, reaped in main()
        [
            sys.executable,
            "-m",
            "broker",
            "simulate",
            "kapua",
            "--port",
            str(port),
            "--devices",
            str(DEVICES),
            "--step-interval-s",
            str(step_interval_s),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/control/state") as response:
                    if response.status == 200:
                        return proc
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the Kapua simulator did not start")
            await asyncio.sleep(0.2)


async def one_scale(operations: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    sim = await start_simulator(port, args.step_interval_s)
    try:
        async with aiohttp.ClientSession() as http:
            steps = int((args.warmup_s + args.measure_s) / args.step_interval_s) + 20
            async with http.post(
                f"http://127.0.0.1:{port}/control/operations",
                json={
                    "count": operations,
                    "steps": steps,
                    "stepIntervalS": args.step_interval_s,
                    "jitterS": args.step_interval_s * 0.2,
                },
            ) as response:
                started = (await response.json())["operations"]
        settings = KapuaSettings(
            enabled=True,
            base_url=f"http://127.0.0.1:{port}/v1",
            username="kapua-sys",
            password="kapua-password",  # noqa: S106 - the simulator's demo credential
            max_requests_per_s=args.max_requests_per_s,
            max_concurrent_requests=64,
        )
        metrics = KapuaMetrics(BrokerMetrics(CollectorRegistry()))
        client = KapuaClient(settings, metrics, user_agent="mdm-notification-broker/bench")
        sink = CountingSink()
        store = CountingStore(StateWriter(sink), metrics, KafkaSettings(), lambda: 1)  # type: ignore[arg-type]
        poller = OperationPoller(settings, client, sink, metrics, store)
        scheduler = PollScheduler(settings, poller, store, KafkaHealth(), metrics)
        records = {  # as the state shard hands them over: stored key -> newest value
            record_key(op_key(op["scopeId"], op["id"]), "watch", 1): watch_value(
                op["scopeId"], op["deviceId"], op["id"], "bench"
            )
            for op in started
        }
        await client.start()
        stop = asyncio.Event()
        await scheduler.on_loaded(0, records)
        runner = asyncio.create_task(scheduler.run(stop))
        await asyncio.sleep(args.warmup_s)
        registry = metrics.broker.registry
        r0, e0 = requests_sent(registry), sink.events
        c0, s0, t0 = time.process_time(), cpu_seconds(sim.pid), time.monotonic()
        await asyncio.sleep(args.measure_s)
        r1, e1 = requests_sent(registry), sink.events
        c1, s1, t1 = time.process_time(), cpu_seconds(sim.pid), time.monotonic()
        stop.set()
        await asyncio.wait_for(runner, 30)
        await client.stop()
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    elapsed = t1 - t0
    requests, events = r1 - r0, e1 - e0
    return {
        "operations": operations,
        "requests_per_s": round(requests / elapsed, 1),
        "events_per_s": round(events / elapsed, 1),
        "rows_offered_per_s": round(operations / args.step_interval_s, 1),
        "requests_per_event": round(requests / events, 3) if events else None,
        "poller_cpu_pct": round(100 * (c1 - c0) / elapsed, 1),
        "poller_cpu_ms_per_request": round(1000 * (c1 - c0) / requests, 3) if requests else None,
        "simulator_cpu_pct": round(100 * (s1 - s0) / elapsed, 1),
        "measured_s": round(elapsed, 1),
    }


def commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, check=True, text=True
        ).stdout.strip()
    return "unknown"


async def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kapua_requests", description=__doc__)
    p.add_argument("--scales", type=int, nargs="+", default=[100, 1000, 10_000])
    p.add_argument("--step-interval-s", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--measure-s", type=float, default=60.0)
    p.add_argument("--max-requests-per-s", type=float, default=5000.0)
    p.add_argument("--quick", action="store_true", help="100 and 1,000 operations, short")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.scales, args.warmup_s, args.measure_s, args.step_interval_s = [100, 1000], 20, 20, 5
    rows = []
    for operations in args.scales:
        row = await one_scale(operations, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "benchmark": "kapua_requests",
        "commit": commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m": os.getloadavg()[0],
        },
        "settings": {
            "step_interval_s": args.step_interval_s,
            "warmup_s": args.warmup_s,
            "measure_s": args.measure_s,
            "poller": "KapuaSettings defaults (poll_rows_target 1.5, intervals 2..30 s, "
            "operation check every 30 s)",
        },
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'operations':>10} {'req/s':>8} {'events/s':>9} {'req/event':>9} {'cpu %':>6}")
    for r in rows:
        print(
            f"{r['operations']:>10} {r['requests_per_s']:>8} {r['events_per_s']:>9} "
            f"{r['requests_per_event']!s:>9} {r['poller_cpu_pct']:>6}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
