"""`mdm-broker simulate amapi` as a process, checked by `mdm-broker android check`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.android.cli_process import run_cli
from tests.e2e.android.cli_process import simulator_process as cli_simulator


@pytest.fixture
def amapi_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with cli_simulator(
        tmp_path, "amapi", "amapi-sa.json", "amapi-simulator.log", b"Pub/Sub + AMAPI simulator on"
    ) as (base, key):
        yield base, key


async def _check(config: Path) -> subprocess.CompletedProcess[bytes]:
    return await run_cli("android", "check", "--config", str(config))


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
