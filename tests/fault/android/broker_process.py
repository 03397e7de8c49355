"""The broker as a process in the Android fault tests: its config head, start and stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from broker.settings import KafkaSettings


def kafka_http_toml(kafka: KafkaSettings) -> str:
    """The ``[kafka]`` and ``[http]`` sections of the broker config the fault tests write."""
    return f"""
[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
events_topic = "{kafka.events_topic}"
dlq_topic = "{kafka.dlq_topic}"
state_topic = "{kafka.state_topic}"
publish_timeout_s = 10.0
health_probe_interval_s = 0.5

[http]
host = "127.0.0.1"
port = 0
"""


def _broker_command(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("mdm-broker")
    if script.exists():
        return [str(script), "run", "--config", str(config)]
    found = shutil.which("mdm-broker")
    if found:
        return [found, "run", "--config", str(config)]
    return [sys.executable, "-m", "broker", "run", "--config", str(config)]


def start_broker(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """``mdm-broker run --config config``, its output appended to ``log_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_BROKER_")}
    log_file = log_path.open("ab")
    try:
        return subprocess.Popen(
            _broker_command(config), stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    finally:
        log_file.close()


async def stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    """Send ``sig`` (if still running) and wait up to 30 s, then kill; the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return await asyncio.to_thread(proc.wait, 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
