"""`mdm-broker dev` as a newcomer runs it: ready, all three vendors in Kafka, metrics that pass
promtool, every dashboard query answered by a real Prometheus, and nothing left after SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.devtools.devkafka import free_port
from broker.events import CanonicalEvent, decode_event
from tests.kafka_helpers import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "mdm-broker.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


async def _get_json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as resp:
        return await resp.json()


@pytest.fixture
async def dev_stack(
    tmp_path: Path,
) -> AsyncIterator[tuple[dict[str, Any], asyncio.subprocess.Process]]:
    state = tmp_path / "dev"
    log = (tmp_path / "dev.log").open("wb")  # a file, not a pipe: an undrained pipe would block dev
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "dev", "--state-dir", str(state),
        "--port", str(free_port()), "--traffic-interval-s", "1",
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    endpoints_file = state / "endpoints.json"
    deadline = time.monotonic() + 120
    while not endpoints_file.exists():
        assert proc.returncode is None, "mdm-broker dev exited during start-up"
        assert time.monotonic() < deadline, "mdm-broker dev not ready within 120 s"
        await asyncio.sleep(0.5)
    endpoints = json.loads(endpoints_file.read_text())
    try:
        yield endpoints, proc
    finally:
        # On a failed test: ask for a clean stop first; a SIGKILLed `dev` would orphan its JVM.
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for pid in endpoints["kafka_pids"]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _source_kind(event: CanonicalEvent) -> str:
    if event.vendor.value != "android":
        return event.vendor.value
    return "android/amapi" if "pubsub" in event.data else "android/emm"


async def test_dev_stack_end_to_end(
    dev_stack: tuple[dict[str, Any], asyncio.subprocess.Process], tmp_path: Path
) -> None:
    endpoints, proc = dev_stack
    for key in ("kafka_bootstrap", "topic", "broker_url", "metrics_url"):
        assert endpoints[key]
    assert endpoints["apple"]["webhook_url"].endswith("/apple/demo/notifications")
    assert endpoints["apple"]["tenant"] == "demo"
    assert endpoints["apple"]["notification_auth_token"]
    for vendor in ("apple", "android", "amapi", "kapua"):
        assert endpoints[vendor]["simulator_url"].startswith("http://127.0.0.1:")

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{endpoints['broker_url']}/readyz") as resp:
            assert resp.status == 200, await resp.text()

        # Events from all three vendors within 60 s; Android from both EMM and AMAPI (Pub/Sub).
        wanted = {"apple", "android/emm", "android/amapi", "kapua"}
        started = time.monotonic()
        sources: set[str] = set()
        while sources != wanted and time.monotonic() - started < 60:
            records = await read_records(
                endpoints["kafka_bootstrap"], endpoints["topic"], 10_000, timeout_s=3
            )
            sources = {_source_kind(decode_event(r.value)) for r in records}
        assert sources == wanted

        # /metrics passes promtool.
        async with session.get(endpoints["metrics_url"]) as resp:
            metrics_text = await resp.text()
        promtool = shutil.which("promtool")
        assert promtool, "promtool missing: apt-get install prometheus (done by .ci/run)"
        lint = await asyncio.create_subprocess_exec(
            promtool, "check", "metrics",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        lint_out, _ = await lint.communicate(metrics_text.encode())
        assert lint.returncode == 0, lint_out.decode()

        # A real Prometheus scrapes the stack; every dashboard panel's query returns data.
        prometheus = shutil.which("prometheus")
        assert prometheus, "prometheus missing: apt-get install prometheus (done by .ci/run)"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            Path(endpoints["config_file"]).with_name("prometheus.yml").read_text()
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
        )  # fmt: skip
        port = free_port()
        prom = await asyncio.create_subprocess_exec(
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{port}/api/v1"
            panels = json.loads(DASHBOARD.read_text())["panels"]
            queries = [t["expr"] for p in panels for t in p["targets"]]
            empty: list[str] = queries
            deadline = time.monotonic() + 90
            while empty and time.monotonic() < deadline:
                await asyncio.sleep(2)
                still_empty = []
                for expr in empty:
                    try:
                        doc = await _get_json(session, f"{api}/query", query=expr)
                    except aiohttp.ClientError:
                        still_empty.append(expr)
                        continue
                    assert doc.get("status") != "error", f"{expr}: {doc}"
                    if not doc.get("data", {}).get("result"):
                        still_empty.append(expr)
                empty = still_empty
            assert not empty, f"dashboard queries without data: {empty}"
            rules = await _get_json(session, f"{api}/rules")
            loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
            assert "MdmBrokerKafkaUnhealthy" in loaded
        finally:
            prom.terminate()
            await asyncio.wait_for(prom.wait(), 30)

    # SIGINT stops everything; no process of the stack is left.
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 90)
    output = (tmp_path / "dev.log").read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "stopped; demo consumer handled" in output
    # The generated traffic got the answers it expects (a malformed body is a 2xx dead letter).
    assert "request answered" not in output, output[-3000:]

    # Secrets of the stack never reach the logs or the metrics.
    state = Path(endpoints["config_file"]).parent
    secrets = {
        "apple notification token": endpoints["apple"]["notification_auth_token"],
        "apple sToken": (state / "apple.stoken").read_text().strip(),
        "kapua password": tomllib.loads((state / "broker.toml").read_text())["kapua"]["password"],
        "android private key": json.loads((state / "android-service-account.json").read_text())[
            "private_key"
        ].splitlines()[1],
    }
    for name, secret in secrets.items():
        assert secret not in output, f"{name} leaked into the logs"
        assert secret not in metrics_text, f"{name} leaked into /metrics"
    for pid in endpoints["kafka_pids"]:
        assert not _alive(pid), f"Kafka JVM {pid} survived SIGINT"
