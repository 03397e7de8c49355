"""``mdm-broker simulate apple``: run the Apple simulator until SIGINT/SIGTERM.

The sToken of the default location is written to ``--s-token-file`` (point the broker's
``apple.tenants.<name>.s_token_file`` at it) or printed; it is a simulator token, not a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mdm-broker simulate apple",
        description="Simulated Apple Apps and Books Management API v2 with notification delivery.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--uid", default="2049025000431439", help="uId of the default location")
    p.add_argument("--s-token-file", type=Path, default=None, help="write the sToken here")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--processing-delay-s", type=float, default=0.0)
    p.add_argument("--retry-window-s", type=float, default=180.0, help="3 attempts within this")
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--delay-s", type=float, default=0.0)
    p.add_argument("--reorder", action="store_true")
    p.add_argument("--error-status-200", action="store_true", help="errors with HTTP 200")
    p.add_argument("--require-https", action="store_true", help="refuse http notification URLs")
    p.add_argument("--seed", type=int, default=None)
    return p


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    config = SimConfig(
        page_size=args.page_size,
        processing_delay_s=args.processing_delay_s,
        error_status_200=args.error_status_200,
        require_https=args.require_https,
    )
    faults = Faults(
        max_attempts=args.max_attempts,
        retry_window_s=args.retry_window_s,
        duplicate_rate=args.duplicate_rate,
        drop_rate=args.drop_rate,
        delay_s=args.delay_s,
        reorder=args.reorder,
    )
    sim = AppleSimulator(
        config, faults, seed=args.seed, default_uid=args.uid, host=args.host, port=args.port
    )
    await sim.start()
    try:
        token = sim.default.s_token
        if args.s_token_file is not None:
            args.s_token_file.write_text(token + "\n")
            os.chmod(args.s_token_file, 0o600)
            where = f"written to {args.s_token_file}"
        else:
            where = token
        print(f"apple simulator: API {sim.api_url}, control {sim.base_url}/_sim", flush=True)
        print(f"location uId {sim.default.uid}; sToken {where}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str]) -> int:
    """Entry point used by ``broker.app.simulate_cli``; returns the exit code."""
    from broker.signals import install_stop_signals

    args = build_parser().parse_args(list(argv))

    async def run() -> None:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop)
        await serve(args, stop)

    asyncio.run(run())
    return 0
