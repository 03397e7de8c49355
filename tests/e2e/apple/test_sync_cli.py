"""``mdm-broker apple sync``: an operator's sync runs the scheduler's code against the Apple
simulator and real Kafka, reads only what changed since the broker's stored versions (everything
with ``--full``), prints its progress, and records the versions it reached so that the broker's
next sync reads on from there (the owner adopts them; the location record stays the owner's)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from broker.app.cli import main
from broker.app.config import BrokerSettings
from broker.events import EventType
from broker.settings import KafkaSettings
from broker.state import load_state
from broker.topics import create_topics
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import TENANT, apple_adapter, running_broker, wait_idle
from tests.e2e.apple.sync_helpers import (
    create_users,
    eventually,
    read_all,
    sync_apple_settings,
    wait_sync,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
async def config(sim: AppleSimulator, broker_settings: BrokerSettings, tmp_path: Path) -> str:
    """A broker.toml for the CLI: the test's Kafka topics (created) and the simulator."""
    kafka = broker_settings.kafka
    await create_topics(kafka)
    path = tmp_path / "broker.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
events_topic = "{kafka.events_topic}"
dlq_topic = "{kafka.dlq_topic}"
state_topic = "{kafka.state_topic}"

[apple]
enabled = true
api_base_url = "{sim.api_url}"

[apple.tenants.{TENANT}]
notification_auth_tokens = ["tok"]
s_token = "{sim.default.s_token}"
expected_uid = "{sim.default.uid}"
"""
    )
    return str(path)


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, list(argv))  # the real CLI, on a loop of its own
    return code, capsys.readouterr().out


async def test_cli_sync_narrow_then_full(
    sim: AppleSimulator,
    broker_settings: BrokerSettings,
    config: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka = broker_settings.kafka
    first = await create_users(sim, 4, prefix="early")
    await wait_idle(sim)
    async with running_broker(broker_settings, sync_apple_settings(sim)) as app:
        await wait_sync(app, "initial")  # the broker stores the versions it read
        scheduler = apple_adapter(app).sync
        initial_users = scheduler.records[TENANT].versions["users"]
        later = await create_users(sim, 3, prefix="late")
        await wait_idle(sim)

        code, out = await _cli(capsys, "apple", "sync", "--tenant", TENANT, "--config", config)
        assert code == 0, out
        assert "stored versions: " in out
        assert "owns this location" in out  # the running broker is named as the owner
        assert "users: reading changes since version" in out
        assert "users: 3 record(s) read, 3 event(s) acked by Kafka" in out
        reached = _version(out, "users")
        assert reached != initial_users

        async def adopted() -> bool:
            return scheduler.records[TENANT].versions.get("users") == reached

        await eventually(adopted, 30, "the owner took the manual sync's users version")
        # The broker's next sync reads on from there: nothing to republish.
        report = await scheduler.sync_now(TENANT, "safety_net")
        assert report.records["users"] == 0

        code, out = await _cli(
            capsys, "apple", "sync", "--tenant", TENANT, "--config", config, "--full"
        )
        assert code == 0, out
        assert "users: reading all ..." in out
        assert "users: 7 record(s) read, 7 event(s) acked by Kafka" in out
        stored = await load_state(kafka, prefix="apple/")
        assert stored[f"apple/sync/{TENANT}"]["versions"]["users"] == reached
        await eventually(_manual_entries_gone(kafka), 30, "manual entries tombstoned")

    events = await read_all(kafka.bootstrap_servers, kafka.events_topic)
    manual = {
        e.data["client_user_id"]
        for e in events
        if e.type is EventType.USER_SYNCED and e.data["sync"]["reason"] == "manual"
    }
    assert manual == set(first) | set(later)


def _version(out: str, dataset: str) -> str:
    """The version a CLI sync reached for ``dataset``, from its progress line."""
    match = re.search(rf"^{dataset}: .* \(version (\S+)\)$", out, re.MULTILINE)
    assert match is not None, out
    return match.group(1)


def _manual_entries_gone(kafka: KafkaSettings) -> Callable[[], Awaitable[bool]]:
    async def gone() -> bool:
        return await load_state(kafka, prefix="apple/manual/") == {}

    return gone


async def test_cli_sync_without_a_broker_is_taken_by_the_next_owner(
    sim: AppleSimulator,
    broker_settings: BrokerSettings,
    config: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka = broker_settings.kafka
    users = await create_users(sim, 2)
    await wait_idle(sim)
    code, out = await _cli(capsys, "apple", "sync", "-t", TENANT, "-c", config)
    assert code == 0, out
    assert "no stored sync state: reading everything" in out
    assert "users: 2 record(s) read, 2 event(s) acked by Kafka" in out
    assert f"synced '{TENANT}'" in out
    events = await read_all(kafka.bootstrap_servers, kafka.events_topic)
    assert {e.data["client_user_id"] for e in events if e.type is EventType.USER_SYNCED} == set(
        users
    )
    state = await load_state(kafka, prefix="apple/")
    assert f"apple/sync/{TENANT}" not in state  # the location record is the owner's alone
    (entry,) = state.values()
    assert entry["versions"]["users"] == _version(out, "users")

    # A broker that comes later takes those versions: its initial sync reads on from them.
    async with running_broker(broker_settings, sync_apple_settings(sim)) as app:
        report = await wait_sync(app, "initial")
        assert report.records["users"] == 0
        versions = apple_adapter(app).sync.records[TENANT].versions
        assert versions["users"] == _version(out, "users")
        await eventually(_manual_entries_gone(kafka), 30, "manual entry tombstoned")
