"""Composition root and lifecycle of one broker process.

Start order: topic check -> publisher (Kafka) -> adapters' background work -> HTTP server.

The topic check refuses to start (:class:`~broker.topics.MissingTopicsError`, exit 2) when a
topic the broker or an enabled adapter needs is missing and Kafka will not auto-create it.

If Kafka cannot be reached or refuses the broker at start (bad credentials, untrusted CA, host
name mismatch, missing ACL...), the broker does NOT exit: it logs one ERROR line naming the cause
and the setting to fix, counts ``mdm_broker_kafka_connect_errors_total{cause}``, answers /readyz
503 with that reason (adapters take no vendor work: Apple gets 503, pullers park, pollers freeze
their cursors) and retries the connection in the background with a bounded backoff, so fixing the
cluster side (an ACL, a restarted Kafka) needs no broker restart. Topics found missing by such a
later attempt are logged and retried the same way (run ``mdm-broker topics create``).

Stop order (graceful shutdown). ``shutdown_timeout_s`` bounds the whole of it as **one
deadline**; each step gets what the steps before it left:

1. stop intake: close the HTTP listening sockets (no new webhooks) and tell adapters to stop
   pulling/polling; their in-flight sets and state writes finish or are cancelled at the deadline;
2. drain in-flight HTTP requests (each waits for its Kafka ack; cancelled at the deadline);
3. flush the Kafka producer and close it; what it could not flush is abandoned and counted.

Un-acknowledged vendor work is abandoned, never acknowledged (the vendor redelivers it).
:meth:`BrokerApp.stop` returns a :class:`ShutdownReport`; ``mdm-broker run`` turns it into the
exit code (0 complete, 3 budget exceeded and something abandoned).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.adapter import Adapter, AdapterContext, AdapterFactory
from broker.app import registry
from broker.app.config import BrokerSettings
from broker.errors import ConfigError, PublishError
from broker.health import KafkaHealth
from broker.http import build_http_app
from broker.httpserve import start_site
from broker.kafka_diagnosis import Diagnosis, capture_aiokafka_errors, diagnose
from broker.lifecycle import AsyncService, Lifecycle
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.retry import Backoff
from broker.supervisor import SupervisedTask, Supervisor
from broker.topics import MissingTopicsError, TopicNeed, check_topics, require_topics

log = logging.getLogger(__name__)

_RECONNECT_MAX_S = 30.0

_PUBLISHER_RESERVE_S = 1.0
"""Part of the shutdown budget kept for closing the publisher when earlier steps ran long."""


@dataclass
class ShutdownReport:
    """How the graceful shutdown went. ``complete``: nothing had to be cut off."""

    seconds: float = 0.0
    late_adapters: list[str] = field(default_factory=list)
    http_drained: bool = True
    unflushed_records: int = 0

    @property
    def complete(self) -> bool:
        return not self.late_adapters and self.http_drained and self.unflushed_records == 0


def default_topic_needs(settings: BrokerSettings) -> list[TopicNeed]:
    """Topics the enabled adapters need besides events, DLQ and state."""
    return registry.topic_needs(settings)


def default_adapter_factories(settings: BrokerSettings) -> list[AdapterFactory]:
    """The vendor adapters compiled into this build; each returns None when disabled."""
    return registry.factories(settings)


class BrokerApp(AsyncService):
    """One broker process: publisher, adapters and HTTP server with one start/stop lifecycle.

    Use as ``async with BrokerApp(settings) as app:`` (or :meth:`start` / :meth:`stop`); the
    lifecycle is :class:`broker.lifecycle.Lifecycle`'s: a failed start stops what it started, a
    stopped app cannot be started again.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        registry: CollectorRegistry | None = None,
        factories: list[AdapterFactory] | None = None,
        topic_needs: list[TopicNeed] | None = None,
        config_hint: str = "",
    ) -> None:
        self.settings = settings
        self.metrics = BrokerMetrics(registry)
        self.health = KafkaHealth()
        self.supervisor = Supervisor(settings.supervisor, self.metrics.registry)
        self.publisher = KafkaPublisher(
            settings.kafka, self.health, self.metrics, supervisor=self.supervisor
        )
        self._factories = (
            factories if factories is not None else default_adapter_factories(settings)
        )
        self._topic_needs = (
            topic_needs if topic_needs is not None else default_topic_needs(settings)
        )
        self._config_hint = config_hint
        self.adapters: list[Adapter] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._connect_task: SupervisedTask | None = None
        self._last_diagnosis: Diagnosis | None = None
        self._stopping = asyncio.Event()
        self.port: int | None = None
        self.lifecycle = Lifecycle("BrokerApp")
        self._report = ShutdownReport()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.http.tls_cert_file else "http"
        return f"{scheme}://{self.settings.http.host}:{self.port}"

    async def start(self) -> None:
        """Check topics, connect to Kafka, start adapters, then open the HTTP port. Idempotent;
        when it raises, whatever had started is stopped again (the app is then STOPPED).

        Raises :class:`~broker.topics.MissingTopicsError` (a ConfigError) when required topics
        are missing and Kafka will not create them. When Kafka refuses or cannot be reached, the
        HTTP port opens anyway (not ready) and the adapters start only once a background retry
        connected (see the module docstring).
        """
        await self.lifecycle.start(self._start, undo=self._shutdown)

    async def _start(self) -> None:
        connected = await self._connect_publisher(last=None)
        ctx = AdapterContext(
            self.settings.kafka, self.publisher, self.health, self.metrics, self.supervisor
        )
        self.adapters = [a for f in self._factories if (a := f(ctx)) is not None]
        if connected:
            for adapter in self.adapters:
                await adapter.start()
        else:
            self._connect_task = self.supervisor.spawn("kafka-connect", self._reconnect)
        http = self.settings.http
        app = build_http_app(
            health=self.health,
            metrics=self.metrics,
            adapters=self.adapters,
            supervisor=self.supervisor,
            max_body_bytes=http.max_body_bytes,
        )
        ssl_context = None
        if http.tls_cert_file is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(http.tls_cert_file, http.tls_key_file)
        try:
            self._runner, self._site, self.port = await start_site(
                app,
                http.host,
                http.port,
                ssl_context=ssl_context,
                shutdown_timeout_s=self.settings.shutdown_timeout_s,
            )
        except OSError as exc:  # port in use, host not on this machine: the operator's to fix
            raise ConfigError(
                f"cannot listen on {http.host}:{http.port} ({exc.strerror or exc}): set http.host "
                "/ http.port (MDM_BROKER_HTTP__HOST / MDM_BROKER_HTTP__PORT; port 0 picks a free "
                "one) or stop the process using it"
            ) from None
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
                await self._check_topics()
                await self.publisher.start()
                return True
            except PublishError as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                diagnosis = diagnose(cause, lines, self.settings.kafka.security.ssl_cert_file)
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
        first = self.settings.kafka.health_probe_interval_s
        backoff = Backoff(first, max(first, _RECONNECT_MAX_S), jitter=0.0)
        delay = backoff.next_delay()
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            except TimeoutError:
                pass
            try:
                connected = await self._connect_publisher(self._last_diagnosis)
            except MissingTopicsError as exc:
                self.health.mark_failed("required Kafka topics missing")
                self.metrics.kafka_healthy.set(0)
                log.error("%s; retrying in the background", exc)
                connected = False
            if connected:
                log.info("kafka connected after earlier failures; starting adapters")
                for adapter in self.adapters:
                    await adapter.start()
                return
            delay = backoff.next_delay()

    async def _check_topics(self) -> None:
        """Refuse missing topics Kafka will not create; tell the publisher each topic's size
        limit. Raises MissingTopicsError, or PublishError when Kafka cannot be asked."""
        kafka = self.settings.kafka
        try:
            report = await asyncio.wait_for(
                check_topics(kafka, self._topic_needs), kafka.request_timeout_s
            )
        except TimeoutError as exc:
            raise PublishError(
                f"Kafka at {kafka.bootstrap_servers} did not describe the topics within "
                f"{kafka.request_timeout_s}s"
            ) from exc
        require_topics(report, kafka, self._config_hint)
        for topic, limit in report.max_message_bytes.items():
            self.publisher.set_topic_limit(topic, limit)

    async def stop(self) -> ShutdownReport:
        """Graceful shutdown in the order of the module docstring, within one deadline of
        ``shutdown_timeout_s`` (plus at most about a second to abandon a frozen Kafka's
        connections). Idempotent: later calls return the first call's report."""
        await self.lifecycle.stop(self._shutdown)
        return self._report

    async def _shutdown(self) -> None:
        self._report = await self._drain()

    async def _drain(self) -> ShutdownReport:
        budget = self.settings.shutdown_timeout_s
        started = time.monotonic()
        deadline = started + budget
        report = ShutdownReport()
        self._stopping.set()
        if self._connect_task is not None:
            await self._connect_task.stop(0)  # it only waits between connection attempts
            self._connect_task = None

        def until_reserve() -> float:
            return max(0.0, deadline - _PUBLISHER_RESERVE_S - time.monotonic())

        if self._site is not None:
            await self._site.stop()
            self._site = None
        adapters, self.adapters = self.adapters, []
        if adapters:
            tasks = {
                asyncio.create_task(a.stop(until_reserve()), name=f"stop-{a.name}"): a.name
                for a in adapters
            }
            done, late = await asyncio.wait(tasks, timeout=until_reserve())
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("adapter %s failed to stop: %r", tasks[task], task.exception())
            for task in late:
                task.cancel()
                report.late_adapters.append(tasks[task])
            if late:
                log.error(
                    "adapters %s did not stop within the shutdown budget; cancelled "
                    "(their un-acked vendor work will be redelivered)",
                    ", ".join(sorted(report.late_adapters)),
                )
                await asyncio.wait(late, timeout=0.2)
        # Adapters drained their own tasks within the budget; whatever is left (the Kafka probe,
        # a task an adapter did not stop) is cancelled now, bounded by supervisor.cancel_wait_s.
        await self.supervisor.stop(0)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                await asyncio.wait_for(runner.cleanup(), until_reserve())
            except TimeoutError:
                report.http_drained = False
                log.error("in-flight HTTP requests not finished within the shutdown budget")
        flush = await self.publisher.stop(max(0.0, deadline - time.monotonic()))
        report.unflushed_records = flush.unflushed_records
        report.seconds = time.monotonic() - started
        if report.complete:
            log.info("broker stopped in %.1fs, drain complete", report.seconds)
        else:
            log.error(
                "broker stopped in %.1fs, drain INCOMPLETE: late adapters=%s, http drained=%s, "
                "records not flushed to Kafka=%d",
                report.seconds,
                report.late_adapters or "none",
                report.http_drained,
                report.unflushed_records,
            )
        return report

    async def run_until(
        self, stop: asyncio.Event, on_started: Callable[[], None] | None = None
    ) -> ShutdownReport:
        """Start, call ``on_started``, wait for ``stop`` to be set (signal handlers live in the
        CLI), then stop."""
        async with self:
            if on_started is not None:
                on_started()
            await stop.wait()
        return self._report
