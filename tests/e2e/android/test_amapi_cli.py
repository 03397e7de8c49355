"""`mdm-broker simulate amapi` as a process, checked by `mdm-broker android check`."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.devtools.devkafka import free_port
from tests.e2e.android.test_cli import _cli, _env


@pytest.fixture
def amapi_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    key = tmp_path / "amapi-sa.json"
    log_path = tmp_path / "amapi-simulator.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                *_cli(),
                "simulate",
                "amapi",
                "--port",
                str(port),
                "--write-service-account",
                str(key),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + 30
        while b"Pub/Sub + AMAPI simulator on" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "simulator did not start in 30 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", key
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


async def _check(config: Path) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(
        subprocess.run,
        [*_cli(), "android", "check", "--config", str(config)],
        capture_output=True,
        env=_env(),
        timeout=60,
    )


async def test_check_reads_the_subscription_and_refuses_a_missing_one(
    amapi_process: tuple[str, Path], tmp_path: Path
) -> None:
    base, key = amapi_process
    config = tmp_path / "broker.toml"
    section = (
        f'[amapi]\nenabled = true\nservice_account_file = "{key}"\napi_base_url = "{base}/v1"\n'
    )
    config.write_text(
        section + 'subscription = "projects/sim-project/subscriptions/amapi-broker"\n'
    )
    ok = await _check(config)
    assert ok.returncode == 0, ok.stderr
    assert b"Pub/Sub access token obtained" in ok.stdout
    assert b"ackDeadlineSeconds 10" in ok.stdout

    config.write_text(section + 'subscription = "projects/sim-project/subscriptions/nope"\n')
    missing = await _check(config)
    assert missing.returncode == 1
    assert b"NOT usable" in missing.stderr
    assert b"404" in missing.stderr

    nothing = tmp_path / "empty.toml"
    nothing.write_text("")
    assert (await _check(nothing)).returncode == 2
