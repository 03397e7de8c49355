"""The one way a process of this project turns SIGTERM/SIGINT into a graceful stop."""

from __future__ import annotations

import asyncio
import signal
import sys


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; a second signal exits at once."""

    def on_signal(signum: int) -> None:
        if stop.is_set():
            print(f"second {signal.Signals(signum).name}: exiting now", file=sys.stderr)
            raise SystemExit(130)
        print(f"{signal.Signals(signum).name}: shutting down gracefully", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
