"""SIGTERM to `mdm-broker run` while Apple webhooks keep arriving (Kafka healthy).

The operator's promise (docs/operations.md, "Shutdown"): the drain completes (exit 0), every
request that got a 2xx answer is in the events topic, and no request is answered with an error
because of the shutdown. Requests sent after the listener closed are refused at connect time,
which is the client's cue to retry elsewhere (Apple redelivers). The frozen-Kafka case (exit 3)
is tests/fault/test_shutdown_budget.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from broker.devtools.devkafka import free_port
from broker.devtools.examples import example_events
from broker.events import EventType, decode_event
from broker.settings import KafkaSettings
from tests.kafka_helpers import read_records

pytestmark = pytest.mark.kafka

TOKEN = "sigterm-under-load-token"
CLIENTS = 8
ANSWERED_BEFORE_SIGTERM = 150


def _notification(client: int, number: int) -> tuple[str, bytes]:
    raw = dict(example_events()[EventType.ASSET_COUNT_CHANGED].data["raw"])
    notification_id = f"00000000-0000-4000-{client:04d}-{number:012d}"
    raw["notificationId"] = notification_id
    return notification_id, orjson.dumps(raw)


async def _client(
    url: str, client: int, answered: dict[str, int], refused: list[str], stop: asyncio.Event
) -> None:
    """Post new notifications, one connection each, until the broker stops accepting them."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for number in range(1_000_000):
            notification_id, body = _notification(client, number)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answered[notification_id] = response.status
            except aiohttp.ClientError as exc:
                refused.append(f"{notification_id}: {type(exc).__name__}")
                if stop.is_set():
                    return
                raise


async def test_sigterm_under_webhook_load_answers_in_flight_and_loses_no_ack(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_settings.bootstrap_servers}"\n'
        f'events_topic = "{kafka_settings.events_topic}"\n'
        f'dlq_topic = "{kafka_settings.dlq_topic}"\nstate_topic = "{kafka_settings.state_topic}"\n'
        f"[http]\nport = {port}\n"
        "[apple]\nenabled = true\nreconcile_enabled = false\n"
        f'[apple.tenants.acme]\nnotification_auth_tokens = ["{TOKEN}"]\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "run", "--config", str(config),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "MDM_BROKER_SHUTDOWN_TIMEOUT_S": "20"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    answered: dict[str, int] = {}
    refused: list[str] = []
    stop = asyncio.Event()
    clients: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert proc.returncode is None, "broker exited early"
                try:
                    async with session.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        url = f"{base}/apple/acme/notifications"
        clients = [
            asyncio.create_task(_client(url, n, answered, refused, stop)) for n in range(CLIENTS)
        ]
        while len(answered) < ANSWERED_BEFORE_SIGTERM:
            assert not any(c.done() for c in clients), [c.exception() for c in clients if c.done()]
            await asyncio.sleep(0.05)
        stop.set()
        answered_at_sigterm = len(answered)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        await asyncio.wait_for(asyncio.gather(*clients), 30)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode()
    assert proc.returncode == 0, log[-3000:]
    assert "drain complete" in log
    statuses = set(answered.values())
    assert statuses == {200}, statuses  # no 5xx, no request cut off with an error answer
    assert len(refused) == CLIENTS  # each client stopped at its first refused connection
    acked = set(answered)
    records = await read_records(kafka_settings.bootstrap_servers, kafka_settings.events_topic,
                                 len(acked), timeout_s=30)  # fmt: skip
    published = {decode_event(r.value).id for r in records}
    assert acked <= published, f"{len(acked - published)} acknowledged but not in Kafka"
    print(
        f"answered {len(acked)} (after SIGTERM: {len(acked) - answered_at_sigterm}), all in Kafka"
    )
