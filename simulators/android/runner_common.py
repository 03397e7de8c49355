"""What the two Google simulator runners (EMM: ``simulate android``, Pub/Sub + AMAPI:
``simulate amapi``) share: the service-account options, the AuthState built from them, the
steady-load loop and serving until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from broker.signals import install_stop_signals
from simulators.android.auth import AuthState
from simulators.android.keys import (
    generate_service_account,
    read_service_account,
    write_service_account,
)
from simulators.android.serving import ServedSimulator

Server = TypeVar("Server", bound=ServedSimulator[Any])


def add_service_account_arguments(parser: argparse.ArgumentParser) -> None:
    """``--service-account`` (repeatable) and ``--write-service-account``."""
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


def auth_from_args(args: argparse.Namespace) -> AuthState:
    """The accounts of ``--service-account`` files, plus a new key written to
    ``--write-service-account`` (its token URI on ``--host``/``--port``)."""
    auth = AuthState(token_lifetime_s=args.token_lifetime_s)
    for path in args.service_account:
        email, pem = read_service_account(path)
        auth.accounts.setdefault(email, []).append(pem)
    if args.write_service_account is not None:
        doc, pem = generate_service_account(token_uri=f"http://{args.host}:{args.port}/token")
        write_service_account(args.write_service_account, doc)
        auth.accounts.setdefault(doc["client_email"], []).append(pem)
        print(f"wrote service account key {args.write_service_account}", flush=True)
    return auth


async def steady_load(emit: Callable[[int, int], None], rate: float, stop: asyncio.Event) -> None:
    """Call ``emit(count, first_seq)`` for about ``rate`` notifications per second until ``stop``."""
    step, seq = 0.5, 0
    while not stop.is_set():
        count = max(1, round(rate * step))
        emit(count, seq)
        seq += count
        try:
            await asyncio.wait_for(stop.wait(), step)
        except TimeoutError:
            continue


async def serve_until_stopped(
    server: Server,
    banner: Callable[[Server], str],
    load: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None,
) -> None:
    """Serve ``server`` until SIGTERM/SIGINT: print ``banner(server)`` once it listens, and run
    ``load(stop)`` beside it when given."""
    stop = asyncio.Event()
    install_stop_signals(asyncio.get_running_loop(), stop)
    async with server:
        print(banner(server), flush=True)
        task: asyncio.Task[None] | None = None
        if load is not None:
            task = asyncio.create_task(load(stop))
        await stop.wait()
        if task is not None:
            await task
