"""Running ``mdm-broker`` as a process in the Android CLI tests: the command, its environment,
one CLI call, and a simulator served by ``mdm-broker simulate android|amapi``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from broker.devtools.devkafka import free_port


def cli() -> list[str]:
    script = Path(sys.executable).with_name("mdm-broker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker"]


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MDM_BROKER_")}


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``mdm-broker *args`` to completion (60 s at most), output captured."""
    return await asyncio.to_thread(
        subprocess.run,
        [*cli(), *args],
        capture_output=True,
        env=cli_env(),
        timeout=60,
    )


@contextlib.contextmanager
def simulator_process(
    tmp_path: Path, vendor: str, key_name: str, log_name: str, banner: bytes, *extra: str
) -> Iterator[tuple[str, Path]]:
    """``mdm-broker simulate <vendor>`` on a free port, writing a new service-account key to
    ``tmp_path / key_name``; yields ``(base_url, key)`` once ``banner`` is logged, then SIGTERM
    and the process must exit 0."""
    port = free_port()
    key = tmp_path / key_name
    log_path = tmp_path / log_name
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                *cli(),
                "simulate",
                vendor,
                "--port",
                str(port),
                "--write-service-account",
                str(key),
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    try:
        deadline = time.monotonic() + 30
        while banner not in log_path.read_bytes():
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
