"""Apple webhook under an out-of-process load generator (wrk), beside its peers, one Kafka.

Every server runs in its own process; the load comes from ``wrk`` (Debian package, C, its own
process), so no server shares its interpreter with the client:

* ``bare``: a bare aiohttp handler that reads the body and answers 200 (the HTTP ceiling);
* ``fastapi``: FastAPI + aiokafka under uvicorn + uvloop + httptools, hand-written to do the same
  job (token, pydantic validation, CloudEvent, 200 after the Kafka ack), bench/peers/;
* ``broker``: ``mdm-broker run`` with the Apple adapter (the real product, its default settings).

The three servers run at once against the same Kafka; wrk drives them in alternating rounds
(bare, fastapi, broker, bare, ...) at each concurrency, and the medians are compared. For each
run: requests/s answered 2xx, p50/p99 latency (wrk's), CPU of the server process per request
(/proc), and for the two that write to Kafka, a check that the topic grew by at least the number
of 2xx answers (every 2xx is in Kafka; wrk stops counting at the deadline while a last request
may still complete, hence "at least").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
PEERS_VENV = REPO / "bench" / "peers" / ".venv"
WRK_SCRIPT = REPO / "bench" / "wrk" / "apple.lua"
TOKEN = "bench-token"  # noqa: S105 - a throwaway token of the benchmark's own servers
PARTITIONS = 6
_TICK = os.sysconf("SC_CLK_TCK")


class BenchSetupError(RuntimeError):
    """A tool or peer the benchmark needs is missing; the message says how to get it."""


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    topic: str | None  # the Kafka topic it writes to, if any

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK


def require_tools() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchSetupError("wrk is missing: `apt-get install wrk` (make bench does it)")
    if not (PEERS_VENV / "bin" / "uvicorn").exists():
        raise BenchSetupError(
            f"the FastAPI peer's virtualenv is missing: python3 -m venv {PEERS_VENV} && "
            f"{PEERS_VENV}/bin/pip install -r bench/peers/requirements.txt (make bench does it)"
        )
    return wrk


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchSetupError(
                f"{url} exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as resp,  # noqa: S310 (loopback)
        ):
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise BenchSetupError(f"{url} not ready after {timeout_s}s:\n{log.read_text()[-3000:]}")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _create_topics(bootstrap: str, topics: list[str]) -> None:
    code = (
        "import asyncio, sys\n"
        "from aiokafka.admin import AIOKafkaAdminClient, NewTopic\n"
        "async def main():\n"
        f"    a = AIOKafkaAdminClient(bootstrap_servers={bootstrap!r})\n"
        "    await a.start()\n"
        f"    await a.create_topics([NewTopic(t, {PARTITIONS}, 1) for t in sys.argv[1:]])\n"
        "    await a.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code, *topics], check=True, cwd=REPO)


def topic_size(bootstrap: str, topic: str) -> int:
    """Sum of the end offsets of ``topic`` (records written, the topic is never compacted)."""
    code = (
        "import asyncio, sys\n"
        "from aiokafka import AIOKafkaConsumer, TopicPartition\n"
        "async def main():\n"
        f"    c = AIOKafkaConsumer(bootstrap_servers={bootstrap!r})\n"
        "    await c.start()\n"
        "    try:\n"
        "        parts = c.partitions_for_topic(sys.argv[1]) or set()\n"
        "        if not parts:\n"
        "            await c._client.force_metadata_update()\n"
        "            parts = c.partitions_for_topic(sys.argv[1]) or set()\n"
        "        tps = [TopicPartition(sys.argv[1], p) for p in parts]\n"
        "        ends = await c.end_offsets(tps)\n"
        "        print(sum(ends.values()))\n"
        "    finally:\n"
        "        await c.stop()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, topic], check=True, cwd=REPO, capture_output=True, text=True
    )
    return int(out.stdout.strip())


def _broker_toml(bootstrap: str, topic: str, port: int) -> str:
    return f"""
[kafka]
bootstrap_servers = "{bootstrap}"
events_topic = "{topic}.events"
dlq_topic = "{topic}.dlq"
state_topic = "{topic}.state"
partitions = {PARTITIONS}
replication_factor = 1

[http]
host = "127.0.0.1"
port = {port}

[log]
level = "WARNING"

[apple]
enabled = true
reconcile_enabled = false

[apple.tenants.bench]
notification_auth_tokens = ["{TOKEN}"]
"""


@contextlib.contextmanager
def servers(
    bootstrap: str, workdir: Path, brokers: dict[str, dict[str, str]] | None = None
) -> Iterator[list[Server]]:
    """Start the servers (each its own process); stop them all on exit. ``brokers``: name ->
    environment overrides (``MDM_BROKER_...``) of each broker variant, default one ``broker``
    with its defaults."""
    tag = uuid.uuid4().hex[:6]
    fastapi_topic = f"benchhttp{tag}.fastapi"
    _create_topics(bootstrap, [fastapi_topic])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_BROKER_")}
    env["PYTHONPATH"] = str(REPO)
    started: list[Server] = []
    try:
        port = _free_port()
        log = workdir / "bare.log"
        proc = _spawn([sys.executable, "-m", "bench.peers.bare_aiohttp", str(port)], env, log)
        started.append(Server("bare", f"http://127.0.0.1:{port}", proc, None))
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, 30)

        port = _free_port()
        log = workdir / "fastapi.log"
        fenv = {
            **env,
            "BENCH_BOOTSTRAP": bootstrap,
            "BENCH_TOPIC": fastapi_topic,
            "BENCH_TOKEN": TOKEN,
        }
        args = [
            str(PEERS_VENV / "bin" / "uvicorn"),
            "bench.peers.fastapi_app:app",
            "--host=127.0.0.1",
            f"--port={port}",
            "--loop=uvloop",
            "--http=httptools",
            "--log-level=warning",
            "--no-access-log",
        ]
        proc = _spawn(args, fenv, log)
        started.append(Server("fastapi", f"http://127.0.0.1:{port}", proc, fastapi_topic))
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, 60)

        mdm = Path(sys.executable).parent / "mdm-broker"
        for name, overrides in (brokers or {"broker": {}}).items():
            port = _free_port()
            log = workdir / f"{name}.log"
            config = workdir / f"{name}.toml"
            topic = f"benchhttp{tag}{name.replace('-', '')}"
            config.write_text(_broker_toml(bootstrap, topic, port))
            benv = {**env, **overrides}
            subprocess.run(
                [str(mdm), "topics", "create", "--config", str(config)], check=True, env=benv
            )
            proc = _spawn([str(mdm), "run", "--config", str(config)], benv, log)
            started.append(Server(name, f"http://127.0.0.1:{port}", proc, f"{topic}.events"))
            _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, 90)
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in started:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def run_wrk(
    wrk: str, server: Server, concurrency: int, duration_s: int, tag: str
) -> dict[str, Any]:
    """One wrk run against ``server``; its summary with 2xx/s and CPU per request."""
    url = f"{server.url}/apple/bench/notifications"
    cpu0 = server.cpu_s()
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            "--timeout=5s",
            "--latency",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            TOKEN,
            tag,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    cpu = server.cpu_s() - cpu0
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    summary: dict[str, Any] = orjson.loads(line.removeprefix("WRK_JSON "))
    bad = summary["status"] + summary["timeout"] + summary["connect"] + summary["read"]
    ok = summary["requests"] - summary["status"]
    seconds = summary["duration_us"] / 1e6
    return {
        "ok": ok,
        "errors": bad,
        "req_per_s": ok / seconds,
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "cpu_us_per_req": cpu / max(ok, 1) * 1e6,
    }


def bench_http(
    bootstrap: str,
    rounds: int,
    duration_s: int,
    concurrencies: tuple[int, ...] = (32, 4),
    brokers: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """See the module docstring; ``brokers`` adds broker variants (see :func:`servers`)."""
    wrk = require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-http-"))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    kafka_check: dict[str, dict[str, int]] = {}
    with servers(bootstrap, workdir, brokers) as started:
        for server in started:  # warm-up: connections, producer metadata, JIT-less caches
            run_wrk(wrk, server, 8, 1, f"warm{uuid.uuid4().hex[:4]}")
        before = {s.name: topic_size(bootstrap, s.topic) for s in started if s.topic}
        for concurrency in concurrencies:
            per = runs.setdefault(f"c{concurrency}", {s.name: [] for s in started})
            for r in range(rounds):
                for server in started:
                    tag = f"c{concurrency}r{r}{uuid.uuid4().hex[:6]}"
                    per[server.name].append(run_wrk(wrk, server, concurrency, duration_s, tag))
        for server in started:
            if server.topic:
                ok = sum(x["ok"] for c in runs.values() for x in c[server.name])
                grown = topic_size(bootstrap, server.topic) - before[server.name]
                kafka_check[server.name] = {"answered_2xx": ok, "records_added": grown}
                if grown < ok:
                    raise AssertionError(
                        f"{server.name}: {ok} answers 2xx but only {grown} records in Kafka"
                    )
    result: dict[str, Any] = {
        "tool": "wrk -t1 --latency (closed loop), bench/wrk/apple.lua, ~1 KB unique bodies",
        "rounds": rounds,
        "duration_s": duration_s,
        "every_2xx_in_kafka": kafka_check,
    }
    for level, per in runs.items():
        medians = {
            name: {
                key: round(statistics.median(x[key] for x in values), 2)
                for key in ("req_per_s", "p50_ms", "p99_ms", "cpu_us_per_req")
            }
            | {"errors": sum(x["errors"] for x in values)}
            for name, values in per.items()
        }
        broker = medians["broker"]["req_per_s"]
        result[level] = {
            "medians": medians,
            "broker_vs_bare": round(broker / medians["bare"]["req_per_s"], 3),
            "broker_vs_fastapi": round(broker / medians["fastapi"]["req_per_s"], 3),
            "runs": {name: [round(x["req_per_s"]) for x in values] for name, values in per.items()},
        }
    return result
