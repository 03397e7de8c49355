"""Composition root and lifecycle of one broker process.

Start order: publisher (Kafka) -> adapters' background work -> HTTP server.
Stop order (graceful shutdown, bounded by ``shutdown_timeout_s``):

1. stop intake: close the HTTP listening sockets (no new webhooks) and tell adapters to stop
   pulling/polling; in-flight requests and sets finish within the budget;
2. un-acknowledged vendor work is abandoned, never acknowledged (the vendor redelivers it);
3. flush the Kafka producer and close it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.adapter import Adapter, AdapterContext, AdapterFactory
from broker.app import registry
from broker.app.config import BrokerSettings
from broker.health import KafkaHealth
from broker.http import build_http_app
from broker.httpserve import start_site
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher

log = logging.getLogger(__name__)


def default_adapter_factories(settings: BrokerSettings) -> list[AdapterFactory]:
    """The vendor adapters compiled into this build; each returns None when disabled."""
    return registry.factories(settings)


class BrokerApp:
    """One broker process: publisher, adapters and HTTP server with one start/stop lifecycle."""

    def __init__(
        self,
        settings: BrokerSettings,
        registry: CollectorRegistry | None = None,
        factories: list[AdapterFactory] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = BrokerMetrics(registry)
        self.health = KafkaHealth()
        self.publisher = KafkaPublisher(settings.kafka, self.health, self.metrics)
        self._factories = (
            factories if factories is not None else default_adapter_factories(settings)
        )
        self.adapters: list[Adapter] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.http.tls_cert_file else "http"
        return f"{scheme}://{self.settings.http.host}:{self.port}"

    async def start(self) -> None:
        """Connect to Kafka, start adapters, then open the HTTP port. Raises PublishError."""
        await self.publisher.start()
        ctx = AdapterContext(self.settings.kafka, self.publisher, self.health, self.metrics)
        self.adapters = [a for f in self._factories if (a := f(ctx)) is not None]
        for adapter in self.adapters:
            await adapter.start()
        http = self.settings.http
        app = build_http_app(
            health=self.health,
            metrics=self.metrics,
            adapters=self.adapters,
            max_body_bytes=http.max_body_bytes,
        )
        ssl_context = None
        if http.tls_cert_file is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(http.tls_cert_file, http.tls_key_file)
        self._runner, self._site, self.port = await start_site(
            app, http.host, http.port, ssl_context=ssl_context, shutdown_timeout_s=5.0
        )
        log.info(
            "broker listening on %s (adapters: %s)",
            self.base_url,
            ", ".join(a.name for a in self.adapters) or "none",
        )

    async def stop(self) -> None:
        """Graceful shutdown in the fixed order of the module docstring. Idempotent."""
        budget = self.settings.shutdown_timeout_s
        started = time.monotonic()

        def remaining() -> float:
            return max(0.5, budget - (time.monotonic() - started))

        if self._site is not None:
            await self._site.stop()
            self._site = None
        adapters, self.adapters = self.adapters, []
        if adapters:
            await asyncio.gather(*(a.stop(remaining()) for a in adapters))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.publisher.stop()
        log.info("broker stopped in %.1fs", time.monotonic() - started)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop`` to be set (signal handlers live in the CLI), then stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
