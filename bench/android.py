"""Google Play EMM at a sustained offered rate: missed ack deadlines and arrival -> ack latency.

``python -m bench.android [--rate 5000] [--seconds 60] [--set-size 1000]``: the EMM simulator
(simulators/android, its own aiohttp server) offers ``--rate`` notifications per second, in sets
of up to ``--set-size``; the broker (BrokerApp with the Android adapter at its defaults, real
Kafka) pulls, publishes and acknowledges. Reported: notifications offered and acked, sets whose
ack deadline passed (expired, late acks), and the arrival -> ack latency of every notification
(from its enqueue in the simulator to the ack of its set, which the broker sends only after
Kafka acked the set's events), p50/p99/max. Simulator and broker share this process (one core
between them), which makes the latency figures pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from adapters.android.normalize import notification_id
from adapters.android.settings import AndroidSettings
from bench.run import _commit, _machine, kafka
from broker.app.config import BrokerSettings
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


async def run(bootstrap: str, rate: float, seconds: float, set_size: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-android-"))
    doc, pem = generate_service_account()
    auth = AuthState()
    key = workdir / "sa.json"
    key.write_bytes(orjson.dumps(doc))
    auth.accounts[doc.get("client_email", ACCOUNT)] = [pem]
    sim = EmmSimulator(
        SimulatorConfig(hold_s=1.0, max_set_size=set_size, rate_limit_qpm=None), auth
    )
    prefix = f"benchemm{uuid.uuid4().hex[:6]}"
    kafka_settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        dlq_topic=f"{prefix}.dlq",
        state_topic=f"{prefix}.state",
        partitions=6,
    )
    await create_topics(kafka_settings)
    enqueued: dict[str, float] = {}
    async with SimulatorServer(sim) as server:
        android = AndroidSettings(
            enabled=True,
            service_account_file=key,
            token_url=server.token_url,
            api_base_url=server.api_base_url,
        )
        settings = BrokerSettings(
            kafka=kafka_settings, http={"host": "127.0.0.1", "port": 0}, android=android
        )
        app = BrokerApp(settings, factories=factories(settings, ["android"]))
        await app.start()
        try:
            offered = await _offer(sim, rate, seconds, enqueued)
            await _drained(sim, offered, timeout_s=60)
        finally:
            await app.stop()
    latencies = sorted(
        record.acked_at - enqueued[notification_id(n)]
        for record in sim.pool.acked
        for n in record.notifications
        if notification_id(n) in enqueued
    )
    stats = sim.pool.stats

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "max_set_size": set_size,
        "offered": offered,
        "acked": stats.acked_notifications,
        "acked_sets": stats.acked_sets,
        "mean_set_size": round(stats.acked_notifications / max(stats.acked_sets, 1), 1),
        "missed_ack_deadlines": stats.expired_sets + stats.late_acks,
        "redelivered": stats.redelivered_notifications,
        "arrival_to_ack_ms": {
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": round(latencies[-1] * 1000, 1) if latencies else None,
            "mean": round(statistics.mean(latencies) * 1000, 1) if latencies else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.android", description=__doc__)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--set-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/android.json"))
    args = parser.parse_args(argv)
    with kafka() as bootstrap:
        result = asyncio.run(run(bootstrap, args.rate, args.seconds, args.set_size))
    result |= {"machine": _machine(), "source": _commit(), "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(orjson.dumps({k: v for k, v in result.items() if k != "machine"}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
