"""Sub-commands contributed by the vendor adapters, the consumer tools and the dev stack.

Each entry's ``register(subparsers)`` adds its own parsers with ``set_defaults(func=...)``; a
``func`` takes the parsed namespace and returns an exit code. Listed explicitly, in help order.
"""

from __future__ import annotations

import argparse
from typing import Any

from adapters.android.cli import register as register_android
from adapters.apple.cli import register as register_apple
from broker.dev import register as register_dev
from broker.simulate_cli import register as register_simulate
from broker.tail import register as register_tail


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add every contributed sub-command to ``mdm-broker``."""
    register_dev(sub)
    register_apple(sub)
    register_android(sub)
    register_simulate(sub)
    register_tail(sub)
