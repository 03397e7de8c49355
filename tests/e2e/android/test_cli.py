"""`mdm-broker simulate android` as a process, `mdm-broker android check|test-push`, broker -> Kafka."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from adapters.android.settings import AndroidSettings
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.events import EventType
from tests.e2e.android.cli_process import run_cli
from tests.e2e.android.cli_process import simulator_process as cli_simulator
from tests.e2e.android.support import read_events

pytestmark = pytest.mark.kafka


@pytest.fixture
def simulator_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with cli_simulator(
        tmp_path, "android", "sa.json", "simulator.log", b"EMM simulator on", "--hold-s", "1"
    ) as (base, key):
        assert key.exists(), "simulator did not write the service-account key"
        yield base, key


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
    check = await run_cli("android", "check", "--config", str(config))
    assert check.returncode == 0, check.stderr
    assert b"access token obtained" in check.stdout

    settings = broker_settings.model_copy(update={"android": android})
    app = BrokerApp(settings, factories=factories(settings, ["android"]))
    await app.start()
    try:
        push = await run_cli("android", "test-push", "--config", str(config), "-e", "LC42")
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
    check = await run_cli("android", "check", "--config", str(config))
    assert check.returncode == 1
    assert b"invalid_scope" in check.stderr
