"""Sub-commands contributed by the vendor adapters, the consumer tools and the dev stack.

Each entry's ``register(subparsers, ...)`` adds its own parsers with ``set_defaults(func=...)``; a
``func`` takes the parsed namespace and returns an exit code. Listed explicitly, in help order.
What a contributor needs of the application (settings loading, starting a broker) is handed in
here, so adapters and dev tooling never import :mod:`broker.app`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adapters.android.cli import register as register_android
from adapters.apple.cli import register as register_apple
from broker.app import registry
from broker.app.config import (
    BrokerSettings,
    load_amapi_settings,
    load_android_settings,
    load_apple_settings,
    load_settings,
)
from broker.app.dlq_cli import register as register_dlq
from broker.app.runtime import BrokerApp
from broker.app.simulate_cli import register as register_simulate
from broker.app.tail import register as register_tail
from broker.devtools.dev import register as register_dev
from broker.topics import create_topics


async def start_dev_broker(config_file: Path) -> tuple[BrokerSettings, BrokerApp]:
    """``mdm-broker dev``'s broker: settings from ``config_file``, topics created, app started."""
    settings = load_settings(config_file)
    await create_topics(settings.kafka, registry.topic_needs(settings, include_disabled=True))
    app = BrokerApp(settings)
    await app.start()
    return settings, app


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add every contributed sub-command to ``mdm-broker``."""
    register_dev(sub, start_dev_broker)
    register_apple(sub, load_apple_settings, lambda path: load_settings(path).kafka)
    register_android(sub, load_android_settings, load_amapi_settings)
    register_dlq(sub)
    register_simulate(sub)
    register_tail(sub)
