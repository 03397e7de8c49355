"""`mdm-broker run` against a Kafka of its own that does not auto-create topics (issue 10, 6 + 8).

* A required topic is missing: the broker refuses to start (exit 2) naming the topic and the fix.
* `topics create` makes every topic with the size limit, compaction and min.insync.replicas.
* SIGTERM while Kafka is frozen (SIGSTOP of its JVM) and a webhook waits for its ack: the process
  exits within shutdown_timeout_s + 1 s, with exit code 3 (drain incomplete).
"""

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
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from broker.devtools.devkafka import KafkaCluster, free_port
from broker.devtools.examples import example_events
from broker.events import EventType

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SHUTDOWN_TIMEOUT_S = 3.0
TOKEN = "frozen-kafka-token"


@pytest.fixture(scope="module")
def strict_kafka() -> Iterator[KafkaCluster]:
    """A Kafka of this module's own (it gets frozen) with auto.create.topics.enable=false."""
    with KafkaCluster(nodes=1, auto_create_topics=False) as cluster:
        yield cluster


def _config(tmp_path: Path, bootstrap: str, port: int) -> Path:
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\n'
        'events_topic = "strict.events"\ndlq_topic = "strict.dlq"\nstate_topic = "strict.state"\n'
        "partitions = 2\nmax_request_bytes = 2000000\n"
        "publish_timeout_s = 30.0\nrequest_timeout_s = 30.0\nhealth_probe_interval_s = 0.5\n"
        f"[http]\nport = {port}\n"
        "[apple]\nenabled = true\nreconcile_enabled = false\n"
        f'[apple.tenants.acme]\nnotification_auth_tokens = ["{TOKEN}"]\n'
    )
    return config


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _notification(number: int) -> bytes:
    raw = dict(example_events()[EventType.ASSET_COUNT_CHANGED].data["raw"])
    raw["notificationId"] = f"00000000-0000-4000-8000-{number:012d}"
    return orjson.dumps(raw)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def _until(predicate_url: str, needle: str, proc: asyncio.subprocess.Process) -> None:
    """Wait (bounded) until GET ``predicate_url`` answers 200 with ``needle`` in its body."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert proc.returncode is None, "broker exited early"
            try:
                status, text = await _get(session, predicate_url)
                if status == 200 and needle in text:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{predicate_url} never showed {needle!r}")


async def _post(url: str, body: bytes) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


async def test_missing_topic_refuses_to_start_naming_topic_and_fix(
    strict_kafka: KafkaCluster, tmp_path: Path
) -> None:
    config = _config(tmp_path, strict_kafka.bootstrap_servers, free_port())
    result = await asyncio.to_thread(_cli, "run", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "strict.events" in result.stderr
    assert "auto.create.topics.enable is off" in result.stderr
    assert f"mdm-broker topics create --config {config}" in result.stderr


async def test_sigterm_with_frozen_kafka_exits_within_budget(
    strict_kafka: KafkaCluster, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, strict_kafka.bootstrap_servers, port)
    created = await asyncio.to_thread(_cli, "topics", "create", "--config", str(config))
    assert created.returncode == 0, created.stderr
    assert "created strict.events" in created.stdout
    await _assert_topic_configs(strict_kafka.bootstrap_servers)

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "run",
        "--config",
        str(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MDM_BROKER_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)},
    )
    kafka_pid = strict_kafka.pids[0]
    base = f"http://127.0.0.1:{port}"
    in_flight: asyncio.Task[int] | None = None
    try:
        await _until(f"{base}/readyz", "", proc)
        assert await _post(f"{base}/apple/acme/notifications", _notification(1)) == 200
        os.kill(kafka_pid, signal.SIGSTOP)
        in_flight = asyncio.create_task(_post(f"{base}/apple/acme/notifications", _notification(2)))
        # The second notification is received and now waits for a Kafka ack that cannot come.
        await _until(
            f"{base}/metrics",
            'mdm_broker_notifications_received_total{type="mdm.asset.count_changed",'
            'vendor="apple"} 2.0',
            proc,
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), SHUTDOWN_TIMEOUT_S + 30)
        elapsed = time.monotonic() - started
    finally:
        os.kill(kafka_pid, signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if in_flight is not None:
            in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)
    log = stderr.decode()
    print(f"SIGTERM -> exit: {elapsed:.2f}s (budget {SHUTDOWN_TIMEOUT_S}s), code {proc.returncode}")
    assert elapsed <= SHUTDOWN_TIMEOUT_S + 1.0, f"took {elapsed:.1f}s\n{log[-3000:]}"
    assert proc.returncode == 3, log[-3000:]  # drain incomplete: the in-flight work was abandoned
    assert "drain INCOMPLETE" in log


async def _assert_topic_configs(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = ["strict.events", "strict.dlq", "strict.state"]
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        configs = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}
            for response in described
            for resource in response.resources
        }
    finally:
        await admin.close()
    for name in names:
        assert configs[name]["max.message.bytes"] == "2000000"
        assert configs[name]["min.insync.replicas"] == "1"
    assert configs["strict.state"]["cleanup.policy"] == "compact"
    assert configs["strict.events"]["cleanup.policy"] == "delete"
