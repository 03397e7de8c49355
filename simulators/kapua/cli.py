"""``mdm-broker simulate kapua [options]``: run the Kapua simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from simulators.kapua.app import KapuaSimulator
from simulators.kapua.state import SimConfig


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    p = argparse.ArgumentParser(
        prog="mdm-broker simulate kapua",
        description=(
            "Simulated Eclipse Kapua REST API (/v1) with token expiry, paging, operations that "
            "progress and close (deleting their notification rows), fault knobs and a control "
            "API under /control (POST /control/operations starts operations in bulk)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--scope-id", default=d.scope_id)
    p.add_argument("--username", default=d.username)
    p.add_argument("--password", default=d.password, help="demo credential of the simulator")
    p.add_argument("--api-key", action="append", default=None, help="accepted API key(s)")
    p.add_argument("--devices", type=int, default=10, help="devices created at start")
    p.add_argument("--token-ttl-s", type=float, default=d.token_ttl_s)
    p.add_argument("--refresh-ttl-s", type=float, default=d.refresh_ttl_s)
    p.add_argument("--step-interval-s", type=float, default=d.step_interval_s)
    p.add_argument("--terminal-row-linger-s", type=float, default=d.terminal_row_linger_s)
    p.add_argument("--sent-on-skew-s", type=float, default=d.sent_on_skew_s)
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        scope_id=args.scope_id,
        username=args.username,
        password=args.password,
        api_keys=tuple(args.api_key) if args.api_key else SimConfig().api_keys,
        token_ttl_s=args.token_ttl_s,
        refresh_ttl_s=args.refresh_ttl_s,
        devices=args.devices,
        step_interval_s=args.step_interval_s,
        terminal_row_linger_s=args.terminal_row_linger_s,
        sent_on_skew_s=args.sent_on_skew_s,
    )


def main(argv: Sequence[str]) -> int:
    """Entry point used by ``broker/app/simulate_cli.py``."""
    from broker.signals import install_stop_signals

    args = build_parser().parse_args(list(argv))
    config = config_from_args(args)

    async def run() -> None:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop)
        async with KapuaSimulator(config, host=args.host, port=args.port) as sim:
            print(
                f"kapua simulator on {sim.base_url} (control: {sim.root_url}/control)",
                file=sys.stderr,
            )
            await stop.wait()

    asyncio.run(run())
    return 0
