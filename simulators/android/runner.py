"""Run the EMM simulator: in-process (tests, ``mdm-broker dev``) or as ``mdm-broker simulate android``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from broker.signals import install_stop_signals
from simulators.android.auth import AuthState
from simulators.android.keys import (
    generate_service_account,
    read_service_account,
    write_service_account,
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
    parser.add_argument(
        "--service-account",
        type=Path,
        action="append",
        default=[],
        help="accept this key file's account (its public key is derived); repeatable",
    )
    parser.add_argument(
        "--write-service-account",
        type=Path,
        default=None,
        help="generate a new key, write it here for the broker, and accept it",
    )
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
    auth = AuthState(token_lifetime_s=args.token_lifetime_s)
    for path in args.service_account:
        email, pem = read_service_account(path)
        auth.accounts.setdefault(email, []).append(pem)
    if args.write_service_account is not None:
        token_uri = f"http://{args.host}:{args.port}/token"
        doc, pem = generate_service_account(token_uri=token_uri)
        write_service_account(args.write_service_account, doc)
        auth.accounts.setdefault(doc["client_email"], []).append(pem)
        print(f"wrote service account key {args.write_service_account}", flush=True)
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
    stop = asyncio.Event()
    install_stop_signals(asyncio.get_running_loop(), stop)
    async with SimulatorServer(simulator, args.host, args.port) as server:
        print(
            f"EMM simulator on {server.base_url} (token {server.token_url}, "
            f"api {server.api_base_url}, control {server.base_url}/control/stats)",
            flush=True,
        )
        load: asyncio.Task[None] | None = None
        if args.load_per_s > 0:
            load = asyncio.create_task(_steady_load(simulator, args.load_per_s, stop))
        await stop.wait()
        if load is not None:
            await load


async def _steady_load(simulator: EmmSimulator, rate: float, stop: asyncio.Event) -> None:
    from simulators.android.notifications import generate

    step = 0.5
    seq = 0
    while not stop.is_set():
        count = max(1, round(rate * step))
        simulator.pool.enqueue(generate(count, first_seq=seq))
        seq += count
        try:
            await asyncio.wait_for(stop.wait(), step)
        except TimeoutError:
            continue


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mdm-broker simulate android``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0
