"""Run the EMM simulator: in-process (tests, ``mdm-broker dev``) or as ``mdm-broker simulate android``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from simulators.android.runner_common import (
    add_service_account_arguments,
    auth_from_args,
    serve_until_stopped,
    steady_load,
)
from simulators.android.server import EmmSimulator, SimulatorConfig
from simulators.android.serving import ServedSimulator

log = logging.getLogger(__name__)


class SimulatorServer(ServedSimulator[EmmSimulator]):
    """An :class:`EmmSimulator` served on ``host:port`` (0 picks a free port)."""

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/androidenterprise/v1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mdm-broker simulate android``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    add_service_account_arguments(parser)
    parser.add_argument("--hold-s", type=float, default=30.0, help="long-poll hold time")
    parser.add_argument("--ack-deadline-s", type=float, default=20.0)
    parser.add_argument("--max-set-size", type=int, default=100)
    parser.add_argument(
        "--rate-limit-qpm", type=float, default=60_000.0, help="429 above this; 0 disables"
    )
    parser.add_argument("--token-lifetime-s", type=int, default=3600)
    parser.add_argument(
        "--load-per-s", type=float, default=0.0, help="generate this many notifications per second"
    )


def build_from_args(args: argparse.Namespace) -> EmmSimulator:
    auth = auth_from_args(args)
    config = SimulatorConfig(
        hold_s=args.hold_s,
        ack_deadline_s=args.ack_deadline_s,
        max_set_size=args.max_set_size,
        rate_limit_qpm=args.rate_limit_qpm or None,
    )
    return EmmSimulator(config, auth)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM/SIGINT."""
    simulator = build_from_args(args)
    await serve_until_stopped(
        SimulatorServer(simulator, args.host, args.port),
        lambda server: (
            f"EMM simulator on {server.base_url} (token {server.token_url}, "
            f"api {server.api_base_url}, control {server.base_url}/control/stats)"
        ),
        (lambda stop: _steady_load(simulator, args.load_per_s, stop))
        if args.load_per_s > 0
        else None,
    )


async def _steady_load(simulator: EmmSimulator, rate: float, stop: asyncio.Event) -> None:
    from simulators.android.notifications import generate

    def emit(count: int, first_seq: int) -> None:
        simulator.pool.enqueue(generate(count, first_seq=first_seq))

    await steady_load(emit, rate, stop)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mdm-broker simulate android``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0
