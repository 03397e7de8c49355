"""Composition root and lifecycle of one broker process.

Start order: publisher (Kafka) -> adapters' background work -> HTTP server.

If Kafka cannot be reached or refuses the broker at start (bad credentials, untrusted CA, host
name mismatch, missing ACL...), the broker does NOT exit: it logs one ERROR line naming the cause
and the setting to fix, counts ``mdm_broker_kafka_connect_errors_total{cause}``, answers /readyz
503 with that reason (adapters take no vendor work: Apple gets 503, pullers park, pollers freeze
their cursors) and retries the connection in the background with a bounded backoff, so fixing the
cluster side (an ACL, a restarted Kafka) needs no broker restart.
Stop order (graceful shutdown, bounded by ``shutdown_timeout_s``):

1. stop intake: close the HTTP listening sockets (no new webhooks) and tell adapters to stop
   pulling/polling; in-flight requests and sets finish within the budget;
2. un-acknowledged vendor work is abandoned, never acknowledged (the vendor redelivers it);
3. flush the Kafka producer and close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.adapter import Adapter, AdapterContext, AdapterFactory
from broker.app import registry
from broker.app.config import BrokerSettings
from broker.errors import PublishError
from broker.health import KafkaHealth
from broker.http import build_http_app
from broker.httpserve import start_site
from broker.kafka_diagnosis import Diagnosis, capture_aiokafka_errors, diagnose
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher

log = logging.getLogger(__name__)

_RECONNECT_MAX_S = 30.0


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
        self._connect_task: asyncio.Task[None] | None = None
        self._last_diagnosis: Diagnosis | None = None
        self._stopping = asyncio.Event()
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.http.tls_cert_file else "http"
        return f"{scheme}://{self.settings.http.host}:{self.port}"

    async def start(self) -> None:
        """Connect to Kafka, start adapters, then open the HTTP port.

        When Kafka refuses or cannot be reached, the HTTP port opens anyway (not ready) and the
        adapters start only once a background retry connected (see the module docstring).
        """
        connected = await self._connect_publisher(last=None)
        ctx = AdapterContext(self.settings.kafka, self.publisher, self.health, self.metrics)
        self.adapters = [a for f in self._factories if (a := f(ctx)) is not None]
        if connected:
            for adapter in self.adapters:
                await adapter.start()
        else:
            self._connect_task = asyncio.create_task(self._reconnect(), name="kafka-connect")
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

    async def _connect_publisher(self, last: Diagnosis | None) -> bool:
        """One attempt to start the publisher; on failure report the cause (logged once per
        new cause) and return False."""
        with capture_aiokafka_errors() as lines:
            try:
                await self.publisher.start()
                return True
            except PublishError as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                diagnosis = diagnose(cause, lines)
        self.metrics.kafka_connect_errors.labels(diagnosis.cause.value).inc()
        self.health.mark_failed(f"{diagnosis.cause.value}: {diagnosis.summary}")
        self.metrics.kafka_healthy.set(0)
        if last is None or last.cause is not diagnosis.cause:
            log.error(
                "kafka connection refused (%s): %s; retrying in the background",
                diagnosis.cause.value,
                diagnosis.summary,
            )
        self._last_diagnosis = diagnosis
        return False

    async def _reconnect(self) -> None:
        """Retry the publisher until it starts or the app stops (backoff doubling to 30 s)."""
        delay = self.settings.kafka.health_probe_interval_s
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            except TimeoutError:
                pass
            if await self._connect_publisher(self._last_diagnosis):
                log.info("kafka connected after earlier failures; starting adapters")
                for adapter in self.adapters:
                    await adapter.start()
                return
            delay = min(_RECONNECT_MAX_S, delay * 2)

    async def stop(self) -> None:
        """Graceful shutdown in the fixed order of the module docstring. Idempotent."""
        budget = self.settings.shutdown_timeout_s
        started = time.monotonic()
        self._stopping.set()
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
            self._connect_task = None

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
