"""``mdm-broker apple ...`` and ``mdm-broker simulate apple``."""

from __future__ import annotations

import asyncio
import io
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path

import pytest

from adapters.apple.cli import status, subscribe
from adapters.apple.stoken import decode_s_token
from broker.app import simulate_cli
from broker.app.cli import build_parser, main
from broker.app.config import load_apple_settings
from broker.errors import ConfigError
from simulators.apple import cli as sim_cli
from simulators.apple.server import AppleSimulator


def _config(sim: AppleSimulator, path: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[apple]
enabled = true
api_base_url = "{sim.api_url}"
api_max_attempts = 1
{extra}
[apple.tenants.acme]
notification_auth_tokens = ["tok"]
s_token = "{sim.default.s_token}"
"""
    )
    return path


async def test_subscribe_reports_apples_refusal_when_the_broker_is_unreachable(
    sim: AppleSimulator, tmp_path: Path
) -> None:
    config = _config(sim, tmp_path / "b.toml", 'public_base_url = "http://127.0.0.1:9"')
    out = io.StringIO()
    code = await subscribe(
        Namespace(
            load_settings=load_apple_settings, tenant="acme", config=config, url=None, types=None
        ),
        out,
    )
    assert code == 1
    assert "9728" in out.getvalue()
    out = io.StringIO()
    assert (
        await status(
            Namespace(load_settings=load_apple_settings, tenant="acme", config=config), out
        )
        == 0
    )
    assert "subscribed types: (none)" in out.getvalue()
    assert "expires in" in out.getvalue()


async def test_configuration_problems_are_config_errors(
    sim: AppleSimulator, tmp_path: Path
) -> None:
    config = _config(sim, tmp_path / "b.toml")
    with pytest.raises(ConfigError):
        await status(
            Namespace(load_settings=load_apple_settings, tenant="nobody", config=config),
            io.StringIO(),
        )
    with pytest.raises(ConfigError, match="public_base_url"):
        await subscribe(
            Namespace(
                load_settings=load_apple_settings,
                tenant="acme",
                config=config,
                url=None,
                types=None,
            ),
            io.StringIO(),
        )


def test_simulate_dispatches_through_the_vendor_table(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Sequence[str]] = []

    def fake(argv: Sequence[str]) -> int:
        seen.append(list(argv))
        return 7

    monkeypatch.setitem(simulate_cli.SIMULATORS, "apple", fake)
    assert main(["simulate", "apple", "--port", "0", "--reorder"]) == 7
    assert seen == [["--port", "0", "--reorder"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "nokia"])


async def test_simulator_command_serves_and_writes_the_s_token(tmp_path: Path) -> None:
    token_file = tmp_path / "apple.token"
    args = sim_cli.build_parser().parse_args(
        ["--port", "0", "--s-token-file", str(token_file), "--retry-window-s", "5"]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sim_cli.serve(args, stop))
    for _ in range(100):  # bounded wait for the file
        if token_file.exists():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert decode_s_token(token_file.read_text()).org_name
    assert token_file.stat().st_mode & 0o077 == 0
