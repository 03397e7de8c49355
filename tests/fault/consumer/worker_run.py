"""What the SIGKILL test's consumer processes share: settings and the run until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from broker.consumer import Handler, IdempotencyStore, IdempotentConsumer
from broker.consumer.processor import Observer
from tests.integration.consumer.helpers import consumer_settings


async def run_until_sigterm(
    args: list[str],
    store: IdempotencyStore[Any],
    handler: Handler[Any],
    observer: Observer | None = None,
    **overrides: Any,
) -> None:
    """Consume ``args`` = BOOTSTRAP TOPIC GROUP until SIGTERM, then stop gracefully
    (``overrides``: more consumer settings)."""
    bootstrap, topic, group = args
    settings = consumer_settings(
        bootstrap,
        topic,
        group,
        commit_interval_s=0.5,
        session_timeout_s=6.0,
        heartbeat_interval_s=1.0,
        **overrides,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = IdempotentConsumer(settings, store, handler, observer=observer)
    await consumer.run_until(stop)
