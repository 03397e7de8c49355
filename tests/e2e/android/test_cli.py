"""`mdm-broker simulate android` as a process, `mdm-broker android check|test-push`, broker -> Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from adapters.android.settings import AndroidSettings
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.devtools.devkafka import free_port
from broker.events import EventType
from tests.e2e.android.support import read_events

pytestmark = pytest.mark.kafka


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("mdm-broker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MDM_BROKER_")}


@pytest.fixture
def simulator_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    key = tmp_path / "sa.json"
    log_path = tmp_path / "simulator.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                *_cli(),
                "simulate",
                "android",
                "--port",
                str(port),
                "--write-service-account",
                str(key),
                "--hold-s",
                "1",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + 30
        while b"EMM simulator on" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "simulator did not start in 30 s"
            time.sleep(0.1)
        assert key.exists(), "simulator did not write the service-account key"
        yield f"http://127.0.0.1:{port}", key
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


async def test_simulator_process_test_push_reaches_kafka(
    simulator_process: tuple[str, Path],
    broker_settings: BrokerSettings,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    base, key = simulator_process
    android = AndroidSettings(
        enabled=True,
        service_account_file=key,  # token_uri inside the key points at the simulator
        api_base_url=f"{base}/androidenterprise/v1",
        pullers=2,
        pull_timeout_s=10.0,
    )
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[android]\nenabled = true\nservice_account_file = "{key}"\n'
        f'api_base_url = "{base}/androidenterprise/v1"\n'
    )
    check = await asyncio.to_thread(
        subprocess.run,
        [*_cli(), "android", "check", "--config", str(config)],
        capture_output=True,
        env=_env(),
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert b"access token obtained" in check.stdout

    settings = broker_settings.model_copy(update={"android": android})
    app = BrokerApp(settings, factories=factories(settings, ["android"]))
    await app.start()
    try:
        push = await asyncio.to_thread(
            subprocess.run,
            [*_cli(), "android", "test-push", "--config", str(config), "-e", "LC42"],
            capture_output=True,
            env=_env(),
            timeout=60,
        )
        assert push.returncode == 0, push.stderr
        (event,) = await read_events(kafka_bootstrap, settings.kafka.events_topic, 1)
        assert event.type is EventType.TEST
        assert event.tenant == "LC42"
        async with aiohttp.ClientSession() as http, http.get(f"{base}/control/stats") as resp:
            stats = await resp.json()
        assert stats["acked_notifications"] == 1
    finally:
        await app.stop()


async def test_check_reports_rejected_credentials(
    simulator_process: tuple[str, Path], tmp_path: Path
) -> None:
    _base, key = simulator_process
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[android]\nservice_account_file = "{key}"\n'
        'scope = "https://www.googleapis.com/auth/not-granted"\n'
    )
    check = await asyncio.to_thread(
        subprocess.run,
        [*_cli(), "android", "check", "--config", str(config)],
        capture_output=True,
        env=_env(),
        timeout=60,
    )
    assert check.returncode == 1
    assert b"invalid_scope" in check.stderr
