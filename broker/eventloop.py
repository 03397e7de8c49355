"""The event loop the broker's commands run on: uvloop when installed, else asyncio's own.

uvloop (the ``fast`` extra, installed in the Docker image and by ``make dev``) makes the HTTP
and Kafka I/O of the broker cheaper per request (see docs/performance.md); the broker behaves the
same without it. ``MDM_BROKER_EVENT_LOOP=asyncio`` forces the standard loop (to compare, or to
rule uvloop out when debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is importable and not disabled, else None."""
    if os.environ.get("MDM_BROKER_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` would use (logged at start-up)."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
