"""Gap detection at the webhook: answers Apple may give up on.

The webhook calls :meth:`GapRecorder.note_answer` with every answer's status. An answer that makes
Apple retry and that stored nothing opens or widens the tenant's gap window: any status except 2xx
(stored; malformed input is dead-lettered and answered 2xx), 404 (a tenant we do not serve) and
405 (a method Apple never uses; aiohttp's router answers it before the webhook runs). 400 stays
excluded for an answer that dead-lettered its input, should the webhook ever give one again.

A 401 does open a gap: it is what Apple sees after a botched token rotation. A client that is not
Apple can therefore keep a tenant's window open, but that costs one incremental sync after it
stops (a window is synced ``retry_horizon_s`` after its last failure), not one per request.

Kafka is usually down when a gap opens, so the window is kept in memory and written as a
:class:`~adapters.apple.syncstate.GapReport` as soon as Kafka takes writes again
(:meth:`flush`); the location's owner (possibly another instance) then syncs it once Apple's retry
horizon has passed. If this instance dies before the flush, the owner's heartbeat stopped too
(Kafka was down), so the owner still sees a restart gap when it loads the location.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from adapters.apple.syncstate import GapReport, gap_key
from broker.errors import BrokerError

log = logging.getLogger(__name__)

STORED_OR_FOREIGN = frozenset({400, 404, 405})


class StatePut(Protocol):
    """Where reports go (:class:`broker.state.StateWriter`): returns after the Kafka ack."""

    async def put(self, key: str, value: Any) -> None: ...


class GapRecorder:
    """Per-tenant gap windows seen by this instance's webhook (see the module docstring)."""

    def __init__(
        self,
        instance: str,
        tenants: set[str],
        on_gap: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._instance = instance
        self._tenants = tenants
        self._on_gap = on_gap
        self._clock = clock
        self._windows: dict[str, GapReport] = {}
        self._unflushed: set[str] = set()

    @staticmethod
    def opens_gap(status: int) -> bool:
        return not 200 <= status < 300 and status not in STORED_OR_FOREIGN

    def note_answer(self, tenant: str, status: int) -> None:
        """Called by the webhook for every answer (cheap; never raises, never blocks)."""
        if tenant not in self._tenants or not self.opens_gap(status):
            return
        now = self._clock()
        window = self._windows.get(tenant)
        if window is None:
            window = GapReport(tenant, self._instance, now, now)
            self._windows[tenant] = window
            log.warning("apple: gap opened for tenant %r (answered %d)", tenant, status)
            if self._on_gap is not None:
                self._on_gap(tenant)
        window.to = max(window.to, now)
        self._unflushed.add(tenant)

    @property
    def pending(self) -> bool:
        return bool(self._unflushed)

    def windows(self) -> dict[str, GapReport]:
        return dict(self._windows)

    async def flush(self, writer: StatePut, partitions: int) -> int:
        """Write every unflushed window; returns how many. Raises nothing: a failed write stays
        unflushed and is retried by the next call."""
        written = 0
        for tenant in sorted(self._unflushed):
            report = self._windows[tenant]
            to = report.to
            try:
                await writer.put(gap_key(tenant, self._instance, partitions), report.to_value())
            except BrokerError as exc:
                log.warning("apple: gap report for %r not stored yet: %s", tenant, exc)
                return written
            if report.to == to:
                self._unflushed.discard(tenant)
            written += 1
        return written
