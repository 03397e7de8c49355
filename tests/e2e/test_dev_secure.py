"""`mdm-broker dev --secure`: the whole local stack over SASL_SSL (SCRAM-SHA-512, throwaway CA):
ready, events of all three vendors readable with the stack's own config (tail), password in no
log line, and no process left after SIGINT."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from broker.app.config import load_settings
from broker.app.tail import TailOptions, tail
from broker.devtools.devkafka import free_port
from broker.events import decode_event

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_dev_secure_runs_the_stack_over_sasl_ssl(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:  # a file, not a pipe: an undrained pipe would block dev
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broker", "dev", "--secure", "--state-dir", str(state),
            "--port", str(free_port()), "--traffic-interval-s", "0.5",
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoints_file = state / "endpoints.json"
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not endpoints_file.exists():
            assert proc.returncode is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "mdm-broker dev --secure not ready within 120 s"
            await asyncio.sleep(0.5)
        endpoints = json.loads(endpoints_file.read_text())
        pids = endpoints["kafka_pids"]
        assert endpoints["kafka_security"].startswith("SASL_SSL/SCRAM-SHA-512")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{endpoints['broker_url']}/readyz") as resp,
        ):
            assert resp.status == 200, await resp.text()

        settings = load_settings(Path(endpoints["config_file"]))
        assert settings.kafka.security.security_protocol == "SASL_SSL"
        for vendor in ("apple", "android", "kapua"):  # one event of each, read over SASL_SSL
            out = io.StringIO()
            async with asyncio.timeout(60):
                printed = await tail(
                    settings.kafka,
                    TailOptions(
                        vendors=frozenset({vendor}),
                        json_output=True,
                        from_beginning=True,
                        max_events=1,
                    ),
                    out=out,
                    err=io.StringIO(),
                )
            assert printed == 1
            assert decode_event(out.getvalue().strip().encode()).vendor.value == vendor
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    output = log_path.read_text()
    assert proc.returncode == 0, output[-3000:]
    password = (state / "kafka-password").read_text()
    assert password not in output
    for pid in pids:
        assert not _alive(pid), f"Kafka JVM {pid} survived SIGINT"
