"""`mdm-broker run` as operators run it: readiness, metrics, JSON logs and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from broker.devtools.devkafka import free_port
from broker.settings import KafkaSettings

pytestmark = pytest.mark.kafka


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.returncode is None, "broker exited early"
        try:
            status, _ = await _get(url)
            if status == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout_s}s")


async def test_run_serves_probes_and_stops_gracefully_on_sigterm(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_settings.bootstrap_servers}"\n'
        f'events_topic = "{kafka_settings.events_topic}"\n'
        f"[http]\nport = {port}\n[log]\njson_format = true\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "run",
        "--config",
        str(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MDM_BROKER_SHUTDOWN_TIMEOUT_S": "10"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(f"{base}/readyz", proc)
        status, _ = await _get(f"{base}/healthz")
        assert status == 200
        status, metrics = await _get(f"{base}/metrics")
        assert status == 200
        assert "mdm_broker_kafka_healthy 1.0" in metrics
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    lines = [line for line in stderr.decode().splitlines() if line.startswith("{")]
    messages = [orjson.loads(line)["msg"] for line in lines]
    assert any("broker listening on" in m for m in messages)
    assert any("broker stopped" in m for m in messages)


def test_help_teaches_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "broker", "--help"], capture_output=True, text=True, check=True
    )
    for word in ("run", "topics", "kafka", "MDM_BROKER_", "examples:"):
        assert word in proc.stdout
