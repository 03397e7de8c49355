"""Kafka health: one shared state read by /readyz, the metrics gauge and every adapter.

The publisher marks it failed when Kafka does not ack in time and healthy again when a later
publish or the background probe succeeds. Adapters use it to stop taking work they cannot hand
on: the webhook answers 503 with Retry-After, pullers stop pulling, pollers freeze cursors.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class KafkaHealth:
    """Healthy until a publish fails; then unhealthy until Kafka acks again.

    :meth:`wait_healthy` lets loops park without sleep-polling.
    """

    def __init__(self) -> None:
        self._healthy = True
        self._reason = ""
        self._since = time.monotonic()
        self._healthy_event = asyncio.Event()
        self._healthy_event.set()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def reason(self) -> str:
        """Why Kafka is considered unhealthy (empty when healthy)."""
        return self._reason

    @property
    def seconds_in_state(self) -> float:
        return time.monotonic() - self._since

    def mark_healthy(self) -> None:
        if not self._healthy:
            log.info("kafka healthy again after %.1fs", self.seconds_in_state)
            self._healthy, self._reason, self._since = True, "", time.monotonic()
        self._healthy_event.set()

    def mark_failed(self, reason: str) -> None:
        if self._healthy:
            log.warning("kafka unhealthy: %s", reason)
            self._healthy, self._since = False, time.monotonic()
        self._reason = reason
        self._healthy_event.clear()

    async def wait_healthy(self, timeout_s: float | None = None) -> bool:
        """Wait until healthy (or ``timeout_s``); returns whether Kafka is healthy now."""
        if self._healthy:
            return True
        try:
            await asyncio.wait_for(self._healthy_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
