"""The Apple adapter inside the broker: webhook route, tracked-event registration, reconciliation.

Routes:

* ``POST /apple/{tenant}/notifications``: Apple's notifications (see :mod:`adapters.apple.webhook`).
* ``POST /apple/{tenant}/tracked-events``: downstream services register async ``eventId``\\ s
  (body ``{"eventIds": ["..."]}``, ``Authorization: Bearer <apple.tracking_tokens entry>``).
  202 only after the registration is in the state topic; 503 when Kafka does not ack; 409 when
  the tenant has no sToken (its status cannot be polled); 403 when no tracking token is set.
* ``GET /apple/{tenant}/tracked-events``: the tenant's tracked events (same auth).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import orjson
from aiohttp import web

from adapters.apple.client import AppleApiClient, SharedServiceConfig
from adapters.apple.gaps import GapRecorder
from adapters.apple.metrics import AppleMetrics
from adapters.apple.normalize import event_id_of
from adapters.apple.reconcile import STATE_PREFIX as TRACKED_PREFIX
from adapters.apple.reconcile import EventReconciler, StatusSource
from adapters.apple.settings import AppleSettings
from adapters.apple.syncmetrics import AppleSyncMetrics
from adapters.apple.syncrun import SyncSource
from adapters.apple.syncscheduler import SyncScheduler
from adapters.apple.syncstate import PREFIX as SYNC_STATE_PREFIX
from adapters.apple.syncstate import partition_of
from adapters.apple.webhook import AppleWebhook, bearer_token, token_accepted
from broker.adapter import Adapter, AdapterContext
from broker.errors import ConfigError, PublishError
from broker.events import CanonicalEvent
from broker.lifecycle import Lifecycle
from broker.shard import StateShard
from broker.state import load_state
from broker.supervisor import SupervisedTask

log = logging.getLogger(__name__)

_UNDO_STOP_S = 5.0
"""Drain budget when a failed start() stops what it had started."""

MAX_EVENT_IDS = 1000


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class AppleAdapter:
    """Push adapter: stateless webhook plus reconciliation of tracked async events."""

    def __init__(self, ctx: AdapterContext, settings: AppleSettings) -> None:
        self._ctx = ctx
        self._settings = settings
        self._clients: dict[str, AppleApiClient] = {}
        sync = self._settings.sync
        self.instance_id = sync.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        user_agent = f"mdm-notification-broker/{self.instance_id}"
        shared = SharedServiceConfig()  # global at Apple: one cache for every location
        self.service_config = shared
        for name, tenant in self._settings.tenants.items():
            try:
                s_token = tenant.load_s_token()
            except OSError as exc:
                raise ConfigError(f"apple.tenants.{name}.s_token_file: {exc.strerror}") from exc
            if s_token is not None:
                self._clients[name] = AppleApiClient(
                    self._settings, s_token, ctx.metrics, user_agent=user_agent, shared=shared
                )
        sources: dict[str, StatusSource] = dict(self._clients)
        self.reconciler = EventReconciler(
            self._settings, ctx.kafka, ctx.publisher, AppleMetrics(ctx.metrics.registry), sources
        )
        self.sync_metrics = AppleSyncMetrics(ctx.metrics)
        self.gaps = GapRecorder(
            self.instance_id, set(self._settings.tenants), on_gap=lambda _: self._wake_sync()
        )
        sync_sources: dict[str, SyncSource] = dict(self._clients) if sync.enabled else {}
        if sync.enabled:
            for name in sorted(set(self._settings.tenants) - set(self._clients)):
                log.warning(
                    "apple tenant %r has no sToken: gaps are detected but never synced "
                    "(set apple.tenants.%s.s_token or s_token_file)",
                    name,
                    name,
                )
        uids = {
            name: tenant.expected_uid or name for name, tenant in self._settings.tenants.items()
        }
        self.sync = SyncScheduler(
            sync,
            sync_sources,
            uids,
            ctx.publisher,
            ctx.health,
            self.sync_metrics,
            self.gaps,
            self.instance_id,
            supervisor=ctx.supervisor,
        )
        self.shard = StateShard(
            ctx.kafka,
            group_id=sync.group_id,
            prefix=SYNC_STATE_PREFIX,
            owner=self,
            client_id=f"{ctx.kafka.client_id}-apple-{self.instance_id}",
            session_timeout_s=sync.session_timeout_s,
            heartbeat_interval_s=sync.heartbeat_interval_s,
            metrics=ctx.metrics,
        )
        self.webhook = AppleWebhook(
            self._settings,
            ctx.publisher,
            ctx.health,
            ctx.metrics,
            self._on_published,
            on_answer=self.gaps.note_answer,
        )
        self._stop = asyncio.Event()
        self._stop_sync = asyncio.Event()
        self._task: SupervisedTask | None = None
        self._sync_tasks: list[SupervisedTask] = []
        self.lifecycle = Lifecycle("AppleAdapter")

    @property
    def name(self) -> str:
        return "apple"

    def client(self, tenant: str) -> AppleApiClient | None:
        return self._clients.get(tenant)

    def routes(self) -> list[web.RouteDef]:
        return [
            self.webhook.route(),
            web.post("/apple/{tenant}/tracked-events", self._track),
            web.get("/apple/{tenant}/tracked-events", self._list_tracked),
        ]

    @property
    def _sharded(self) -> bool:
        return self._settings.sync.enabled or self._settings.reconcile_enabled

    async def start(self) -> None:
        """Join the state shard (it hands this instance its locations and tracked events) and
        start the sync and reconciliation loops."""
        await self.lifecycle.start(self._start, undo=lambda: self._halt(_UNDO_STOP_S))

    async def _start(self) -> None:
        if self._settings.reconcile_enabled:
            self.reconciler.attach_shard(self._owned_partition)
            self._task = self._ctx.supervisor.spawn(
                "apple-reconcile", lambda: self.reconciler.run(self._stop)
            )
        if self._sharded:
            spawn = self._ctx.supervisor.spawn
            self._sync_tasks = [
                spawn("apple-sync-shard", self._run_shard),
                spawn("apple-sync", self._run_scheduler),
            ]

    # -- sync: the state shard drives the scheduler ------------------------------------------

    def _wake_sync(self) -> None:
        self.sync.wake()

    def _owned_partition(self, key: str) -> int | None:
        count = self.shard.partition_count
        if count <= 0:
            return None
        partition = partition_of(key, count)
        return partition if partition in self.shard.loaded else None

    async def on_loaded(self, partition: int, entries: dict[str, Any]) -> None:
        self.sync.set_partition_count(self.shard.partition_count)
        await self.sync.on_loaded(partition, entries)
        if self._settings.reconcile_enabled:
            await self.reconciler.on_loaded(partition, entries)

    async def on_revoked(self, partitions: set[int]) -> None:
        await self.sync.on_revoked(partitions)
        if self._settings.reconcile_enabled:
            await self.reconciler.on_revoked(partitions)

    async def on_record(self, partition: int, key: str, value: Any) -> None:
        await self.sync.on_record(partition, key, value)
        if self._settings.reconcile_enabled:
            await self.reconciler.on_record(partition, key, value)

    async def _run_scheduler(self) -> None:
        """Supervised: a failure is logged, counted and restarted with backoff by the supervisor."""
        if not self._stop_sync.is_set():
            await self.sync.run(self._stop_sync)

    async def _run_shard(self) -> None:
        """Supervised; on failure the group member stops polling, leaves, and is restarted."""
        if self._stop_sync.is_set():
            return
        try:
            await self.shard.start()
            self.sync.set_partition_count(self.shard.partition_count)
            await self.shard.run(self._stop_sync)
        except BaseException:
            await self.on_revoked(set(range(max(1, self.shard.partition_count))))
            await self.shard.stop()
            raise

    async def stop(self, timeout_s: float) -> None:
        """Stop syncs (progress and a clean stop are recorded), leave the sync group, stop the
        reconciliation loop (an in-flight poll is cancelled after ``timeout_s``)."""
        await self.lifecycle.stop(lambda: self._halt(timeout_s))

    async def _halt(self, timeout_s: float) -> None:
        self._stop_sync.set()
        if self._sync_tasks:
            await self.sync.stop(timeout_s)
            tasks, self._sync_tasks = self._sync_tasks, []
            await asyncio.gather(*(task.stop(timeout_s / 2) for task in tasks))  # bounded
            await self.shard.stop()
        self._stop.set()
        if self._task is not None:
            await self._task.stop(timeout_s)  # bounded: cancelled after timeout_s
            self._task = None
        for client in self._clients.values():
            await client.stop()

    def ready(self) -> bool:
        return True

    def _on_published(self, tenant: str, event: CanonicalEvent) -> None:
        event_id = event_id_of(event)
        if event_id is not None:
            self.reconciler.note_notification(tenant, event_id)

    def _authorized(self, request: web.Request) -> web.Response | None:
        tokens = self._settings.tracking_tokens
        if not tokens:
            return _json({"error": "tracking disabled: set apple.tracking_tokens"}, 403)
        if not token_accepted(bearer_token(request.headers.get("Authorization")), tokens):
            self._ctx.metrics.rejected.labels("apple", "unauthorized").inc()
            return _json({"error": "unauthorized"}, 401)
        tenant = request.match_info["tenant"]
        if tenant not in self._settings.tenants:
            return _json({"error": "unknown tenant"}, 404)
        return None

    async def _track(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        tenant = request.match_info["tenant"]
        if not self.reconciler.can_track(tenant):
            return _json({"error": "tenant has no sToken; its event status cannot be polled"}, 409)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": "body is not JSON"}, 400)
        ids = body.get("eventIds") if isinstance(body, dict) else None
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > MAX_EVENT_IDS
            or not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids)
        ):
            return _json({"error": f'expected {{"eventIds": [1..{MAX_EVENT_IDS} strings]}}'}, 400)
        added = 0
        try:
            for event_id in ids:
                added += await self.reconciler.track(tenant, event_id)
        except PublishError as exc:
            log.warning("apple tracked events not stored: %s", exc)
            return web.Response(
                status=503, headers={"Retry-After": str(self._settings.retry_after_s)}
            )
        return _json({"tracked": len(ids), "new": added}, 202)

    async def _list_tracked(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        tenant = request.match_info["tenant"]
        local = {e.event_id: e for e in self.reconciler.tracked if e.tenant == tenant}
        try:  # every instance's registrations, not only those this instance reconciles
            stored = await load_state(
                self._ctx.kafka,
                f"{TRACKED_PREFIX}{tenant}/",
                timeout_s=self._ctx.kafka.request_timeout_s,
            )
        except PublishError as exc:
            log.warning("apple tracked events not readable from the state topic: %s", exc)
            return web.Response(
                status=503, headers={"Retry-After": str(self._settings.retry_after_s)}
            )
        events = []
        for value in stored.values():
            event_id = value.get("event_id") if isinstance(value, dict) else None
            if not isinstance(event_id, str):
                continue
            mine = local.get(event_id)
            events.append(
                {
                    "eventId": event_id,
                    "registeredAt": value.get("registered_at"),
                    "polls": mine.polls if mine is not None else None,
                }
            )
        events.sort(key=lambda e: (e["registeredAt"] or 0, e["eventId"]))
        return _json({"trackedEvents": events})


def build(ctx: AdapterContext, settings: AppleSettings) -> Adapter | None:
    """The Apple adapter, or None when ``apple.enabled`` is false."""
    if not settings.enabled:
        return None
    return AppleAdapter(ctx, settings)
