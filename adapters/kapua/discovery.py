"""Periodic discovery of RUNNING operations in the configured scopes.

Every ``discovery_interval_s`` each instance lists the devices of each configured scope (or takes
the configured ``device_ids``) and, for the devices whose discovery key it owns (so instances split
the listing work), lists their operations and registers every RUNNING one with
:meth:`PollScheduler.register`. Registration is idempotent; the operation's owner watches it.
A failed listing is logged and counted and retried in the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from adapters.kapua.client import KapuaClient
from adapters.kapua.cursors import device_key
from adapters.kapua.models import Device, Operation
from adapters.kapua.scheduler import PollScheduler
from adapters.kapua.settings import KapuaSettings
from broker.errors import AdapterError, PublishError

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
            except (AdapterError, PublishError) as exc:
                log.warning("kapua discovery round failed: %s", exc)
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
            for device_id in devices:
                if not self._scheduler.owns(device_key(scope_id, device_id))[0]:
                    continue
                for op in await self._running(scope_id, device_id):
                    if await self._scheduler.register(
                        op.scope_id, op.device_id, op.id, "discovery"
                    ):
                        registered += 1
        return registered

    async def _devices(self, scope_id: str) -> list[str]:
        ids: list[str] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = await self._client.list_devices(scope_id, offset, self._s.page_limit)
            ids.extend(Device.model_validate(item).id for item in page.items)
            if not page.limit_exceeded or not page.items:
                break
            offset += len(page.items)
        return ids

    async def _running(self, scope_id: str, device_id: str) -> list[Operation]:
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
                if op.status == "RUNNING":
                    running.append(op)
            if not page.limit_exceeded or not page.items:
                break
            offset += len(page.items)
        return running
