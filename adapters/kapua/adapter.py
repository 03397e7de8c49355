"""The Kapua adapter: API client + shard consumer + poll scheduler + discovery + watch requests.

Lifecycle (see broker/adapter.py): ``start()`` logs nothing in and returns promptly; background
tasks join the state-topic group, load cursors, discover and poll. ``stop(timeout_s)`` stops
discovery and watch intake, lets in-flight polls finish (each checkpoints its own cursor after the
Kafka ack) within the budget, leaves the group (the other instances take over after a rebalance)
and logs out of Kapua. Nothing is acknowledged to anyone before Kafka acked it; a poll cut short
only causes re-publication of rows published but not yet checkpointed (same event ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from aiohttp import web

from adapters.kapua.client import KapuaClient
from adapters.kapua.cursors import PREFIX
from adapters.kapua.discovery import Discovery
from adapters.kapua.metrics import KapuaMetrics
from adapters.kapua.poller import OperationPoller
from adapters.kapua.scheduler import PollScheduler
from adapters.kapua.settings import KapuaSettings
from adapters.kapua.statestore import StateStore
from adapters.kapua.watch import WatchConsumer
from broker.adapter import AdapterContext
from broker.errors import PublishError
from broker.lifecycle import Lifecycle
from broker.shard import StateShard
from broker.state import StateWriter
from broker.supervisor import SupervisedTask
from broker.topics import TopicNeed

log = logging.getLogger(__name__)

_UNDO_STOP_S = 5.0
"""Drain budget when a failed start() stops what it had started."""


class KapuaAdapter:
    """Polls Kapua device-management operations into canonical events."""

    name = "kapua"

    def __init__(self, ctx: AdapterContext, settings: KapuaSettings) -> None:
        self._ctx = ctx
        self._s = settings
        self.instance_id = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = KapuaMetrics(ctx.metrics)
        self.client = KapuaClient(
            settings, self.metrics, user_agent=f"mdm-notification-broker/{self.instance_id}"
        )
        self.store = StateStore(
            StateWriter(ctx.publisher), self.metrics, ctx.kafka, self._partition_count
        )
        poller = OperationPoller(settings, self.client, ctx.publisher, self.metrics, self.store)
        self.scheduler = PollScheduler(
            settings, poller, self.store, ctx.health, self.metrics, ctx.supervisor
        )
        client_id = f"{ctx.kafka.client_id}-kapua-{self.instance_id}"
        self.shard = StateShard(
            ctx.kafka,
            group_id=settings.group_id,
            prefix=PREFIX,
            owner=self.scheduler,
            client_id=client_id,
            session_timeout_s=settings.session_timeout_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            on_rebalance=self._on_rebalance,
            metrics=ctx.metrics,
        )
        self.scheduler.shard = self.shard
        self.discovery = Discovery(settings, self.client, self.scheduler)
        self.watch = (
            WatchConsumer(
                ctx.kafka, settings, self.scheduler, ctx.publisher, self.metrics, client_id
            )
            if settings.watch_topic_enabled
            else None
        )
        self._stop_intake = asyncio.Event()
        self._stop_polls = asyncio.Event()
        self._tasks: list[SupervisedTask] = []
        self.lifecycle = Lifecycle("KapuaAdapter")

    def _on_rebalance(self, event: str, partitions: int) -> None:
        self.metrics.rebalances.labels(event).inc(partitions)

    def _partition_count(self) -> int:
        return self.shard.partition_count

    def routes(self) -> list[web.RouteDef]:
        return []

    def ready(self) -> bool:
        return not self.scheduler.auth_failed

    async def start(self) -> None:
        """Start background work (the one lifecycle: idempotent, no restart after stop)."""
        await self.lifecycle.start(self._start, undo=lambda: self._halt(_UNDO_STOP_S))

    async def _start(self) -> None:
        await self.client.start()
        spawn = self._ctx.supervisor.spawn
        self._tasks.append(spawn("kapua-shard", self._run_shard))
        self._tasks.append(spawn("kapua-scheduler", lambda: self.scheduler.run(self._stop_polls)))
        if self._s.scopes:
            self._tasks.append(
                spawn("kapua-discovery", lambda: self.discovery.run(self._stop_intake))
            )
        if self.watch is not None:
            self._tasks.append(spawn("kapua-watch", self._run_watch))
        self._tasks.append(spawn("kapua-housekeeping", self._housekeeping))
        log.info("kapua adapter started as %s", self.instance_id)

    async def _run_shard(self) -> None:
        """One run of the group member; on failure it leaves the group and the supervisor
        restarts it (a new member reloads its partitions from the state topic)."""
        try:
            await self.shard.start()
            await self.shard.run(self._stop_polls)
        except BaseException:
            await self.scheduler.on_revoked(set(self.shard.assigned))  # stop polling them first
            await self.shard.stop()
            raise

    async def _run_watch(self) -> None:
        watch = self.watch
        if watch is None:
            return
        try:
            await watch.start()
            await watch.run(self._stop_intake)
        except BaseException:
            await watch.stop()
            raise

    async def _housekeeping(self) -> None:
        """Tombstone done records older than ``done_retention_s`` (bounded state)."""
        while not self._stop_intake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_intake.wait(), 60.0)
            for key in self.scheduler.prune_done():
                try:
                    await self.scheduler.forget(key)
                except PublishError as exc:
                    log.warning("kapua: could not prune done record: %s", exc)
                    break

    async def stop(self, timeout_s: float) -> None:
        """Stop intake, drain polls within ``timeout_s``, leave the group, log out. Idempotent."""
        await self.lifecycle.stop(lambda: self._halt(timeout_s))

    async def _halt(self, timeout_s: float) -> None:
        self._stop_intake.set()
        self._stop_polls.set()
        tasks, self._tasks = self._tasks, []
        if tasks:  # bounded: each task gets the budget, then is cancelled
            await asyncio.gather(*(task.stop(timeout_s) for task in tasks))
        for closing in ([self.watch.stop()] if self.watch is not None else []) + [
            self.shard.stop()
        ]:
            try:  # leaving a group can wait for a rebalance in flight: bound it
                await asyncio.wait_for(closing, max(5.0, timeout_s))
            except TimeoutError:
                log.warning("kapua: a Kafka consumer did not close in time")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop(), 5.0)
        log.info("kapua adapter stopped")


def topic_needs(settings: KapuaSettings, *, include_disabled: bool = False) -> list[TopicNeed]:
    """Kafka topics the Kapua adapter reads besides the core ones (``topics create`` makes them)."""
    if not (settings.enabled or include_disabled) or not settings.watch_topic_enabled:
        return []
    return [
        TopicNeed(settings.watch_topic, "Kapua watch requests {scopeId, deviceId, operationId}")
    ]


def build(ctx: AdapterContext, settings: KapuaSettings) -> KapuaAdapter | None:
    """The Kapua adapter, or None when ``kapua.enabled`` is false."""
    if not settings.enabled:
        return None
    return KapuaAdapter(ctx, settings)
