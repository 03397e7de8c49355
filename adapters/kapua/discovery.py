"""Periodic discovery of operations to watch in the configured scopes.

Every ``discovery_interval_s`` each instance lists the devices of each configured scope (or takes
the configured ``device_ids``) and, for the devices whose discovery key it owns (so instances split
the listing work), lists their operations and registers with :meth:`PollScheduler.register` every
one that has not ended (RUNNING, or any status the broker does not know) and every one that ended
(COMPLETED, FAILED, STALE) within ``closed_lookback_s`` (an operation that started and ended between
two rounds still gets its event; one already published is remembered by its ``done`` record and
ignored). Registration is idempotent; the operation's owner watches it. Devices are listed
concurrently (bounded).

Errors: a round that fails because Kapua or Kafka is unavailable, or credentials are refused, is
logged and retried next round. Anything else (a 2xx body that is not JSON or violates Kapua's
schema, a bug) ends :meth:`Discovery.run` with the exception: the supervisor logs it with its
traceback, counts it and restarts discovery with backoff, and ``/readyz`` names
``kapua-discovery`` while it stays down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from adapters.kapua.client import KapuaClient
from adapters.kapua.cursors import device_key
from adapters.kapua.errors import KapuaNotFoundError
from adapters.kapua.models import Device, Operation
from adapters.kapua.scheduler import PollScheduler
from adapters.kapua.settings import KapuaSettings
from broker.errors import PublishError, VendorAuthError, VendorUnavailableError

log = logging.getLogger(__name__)

MAX_PAGES = 10_000


class Discovery:
    def __init__(
        self, settings: KapuaSettings, client: KapuaClient, scheduler: PollScheduler
    ) -> None:
        self._s = settings
        self._client = client
        self._scheduler = scheduler

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                found = await self.run_once()
                if found:
                    log.info("kapua discovery registered %d operation(s)", found)
            except (VendorUnavailableError, VendorAuthError, PublishError) as exc:
                log.warning("kapua discovery round failed: %s; retried next round", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._s.discovery_interval_s)

    async def run_once(self) -> int:
        """One discovery round; returns how many registrations were written."""
        registered = 0
        if not self._scheduler.owns_anything():
            return 0
        for scope in self._s.scopes:
            scope_id = scope.scope_id
            if scope_id == "_":
                await self._client.tokens.token()
                scope_id = self._client.tokens.scope_id or scope_id
            devices = scope.device_ids or await self._devices(scope_id)
            mine = [d for d in devices if self._scheduler.owns(device_key(scope_id, d))[0]]
            slots = asyncio.Semaphore(max(1, self._s.max_concurrent_requests // 2))
            counts = await asyncio.gather(*(self._device(scope_id, d, slots) for d in mine))
            registered += sum(counts)
        return registered

    async def _device(self, scope_id: str, device_id: str, slots: asyncio.Semaphore) -> int:
        async with slots:
            try:
                ops = await self._candidates(scope_id, device_id)
            except KapuaNotFoundError:
                log.info("kapua discovery: device %s disappeared while listed", device_id)
                return 0
        written = await asyncio.gather(
            *(self._scheduler.register(op.scope_id, op.device_id, op.id, "discovery") for op in ops)
        )
        return sum(written)

    async def _devices(self, scope_id: str) -> list[str]:
        ids: list[str] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = await self._client.list_devices(scope_id, offset, self._s.page_limit)
            ids.extend(Device.model_validate(item).id for item in page.items)  # raises: see above
            if not page.limit_exceeded or not page.items:
                break
            offset += len(page.items)
        return ids

    async def _candidates(self, scope_id: str, device_id: str) -> list[Operation]:
        horizon = datetime.now(UTC) - timedelta(seconds=self._s.closed_lookback_s)
        running: list[Operation] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = await self._client.list_operations(
                scope_id, device_id, offset, self._s.page_limit
            )
            for item in page.items:
                try:
                    op = Operation.model_validate(item)
                except ValueError:
                    log.warning("kapua discovery: unparseable operation of device %s", device_id)
                    continue
                ended_at = op.ended_on or op.modified_on
                if not op.ended or (ended_at is not None and ended_at >= horizon):
                    running.append(op)
            if not page.limit_exceeded or not page.items:
                break
            offset += len(page.items)
        return running
