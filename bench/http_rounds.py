"""The broker alone under ``wrk -c32``, consecutive rounds (``python -m bench.http_rounds``).

How much one process's throughput and CPU per request move from one window to the next on this
machine, without peers: ``mdm-broker run`` at its defaults, ``--rounds`` runs of ``--seconds`` each
back to back, printing per round 2xx/s, the broker's CPU per request, the Kafka JVM's CPU per
request (every ``kafka.Kafka`` process, from /proc) and p99. Used to tell a trend across
``make bench``'s rounds from noise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

from bench.http import require_tools, run_wrk, servers
from bench.run import kafka


def kafka_cpu_s() -> float:
    """CPU seconds used so far by every Kafka broker process on the machine."""
    found = subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True, text=True)
    total = 0.0
    for pid in found.stdout.split():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args(argv)
    wrk = require_tools()
    with kafka() as bootstrap, servers(bootstrap, Path(tempfile.mkdtemp())) as started:
        broker = next(s for s in started if s.name == "broker")
        for server in started:
            if server is not broker:
                server.process.terminate()  # the broker alone on the machine
        run_wrk(wrk, broker, 8, 1, "warm")
        for n in range(args.rounds):
            before = kafka_cpu_s()
            result = run_wrk(wrk, broker, 32, args.seconds, f"r{uuid.uuid4().hex[:6]}")
            kafka_us = (kafka_cpu_s() - before) / max(result["ok"], 1) * 1e6
            print(
                f"round {n}: {result['req_per_s']:.0f} req/s, broker "
                f"{result['cpu_us_per_req']:.0f} us CPU/request, Kafka {kafka_us:.0f} us "
                f"CPU/request, p99 {result['p99_ms']:.1f} ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
