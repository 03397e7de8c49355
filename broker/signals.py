"""The one way a process of this project turns SIGTERM/SIGINT into a graceful stop.

Every entry point (``mdm-broker run``, ``tail``, ``dev``, ``kafka``, ``dev-traffic``, the vendor
simulators) calls :func:`install_stop_signals` and nothing else installs signal handlers.
"""

from __future__ import annotations

import asyncio
import signal
import sys


def install_stop_signals(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, *, second_signal_exits: bool = True
) -> None:
    """SIGTERM and SIGINT set ``stop``; a second signal exits at once (exit code 130) unless
    ``second_signal_exits`` is False (processes that must always clean up child processes)."""

    def on_signal(signum: int) -> None:
        if stop.is_set() and second_signal_exits:
            print(f"second {signal.Signals(signum).name}: exiting now", file=sys.stderr)
            raise SystemExit(130)
        print(f"{signal.Signals(signum).name}: shutting down gracefully", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
