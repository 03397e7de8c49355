"""What the two Android pull adapters (EMM long-poll and AMAPI Pub/Sub) share.

Both open one HTTP session, start one puller on it, report ready while the puller's credentials
are accepted, and on ``stop(timeout_s)`` stop the puller then close the session. A subclass
builds its client and puller in ``_start()`` and names itself.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import aiohttp
from aiohttp import web

from adapters.android.puller import LongPollPuller
from broker.adapter import AdapterContext
from broker.lifecycle import Lifecycle
from broker.retry import Backoff

_UNDO_STOP_S = 5.0
"""Drain budget when a failed start() stops what it had started."""

P = TypeVar("P", bound=LongPollPuller)


class BackoffSettings(Protocol):
    @property
    def backoff_initial_s(self) -> float: ...
    @property
    def backoff_max_s(self) -> float: ...
    @property
    def backoff_multiplier(self) -> float: ...
    @property
    def backoff_jitter(self) -> float: ...


def new_backoff(s: BackoffSettings) -> Backoff:
    """A fresh retry backoff from the adapter's ``backoff_*`` settings."""
    return Backoff(
        s.backoff_initial_s,
        s.backoff_max_s,
        multiplier=s.backoff_multiplier,
        jitter=s.backoff_jitter,
    )


class PullAdapter(Generic[P]):
    """One HTTP session + one puller, under the one :class:`Lifecycle`. No HTTP routes."""

    def __init__(self, ctx: AdapterContext, lifecycle_name: str) -> None:
        self._ctx = ctx
        self._session: aiohttp.ClientSession | None = None
        self._puller: P | None = None
        self.lifecycle = Lifecycle(lifecycle_name)

    @property
    def puller(self) -> P | None:
        return self._puller

    def routes(self) -> list[web.RouteDef]:
        return []

    def ready(self) -> bool:
        """False while the token endpoint or the vendor API rejects our credentials."""
        return self._puller is None or self._puller.auth_ok

    async def start(self) -> None:
        """Start background work (the one lifecycle: idempotent, no restart after stop)."""
        await self.lifecycle.start(self._start, undo=lambda: self._halt(_UNDO_STOP_S))

    async def _start(self) -> None:
        raise NotImplementedError

    def _open_session(self, limit: int) -> aiohttp.ClientSession:
        """Open the adapter's one HTTP session (``limit`` connections) and keep it for _halt."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit), raise_for_status=False
        )
        return self._session

    async def stop(self, timeout_s: float) -> None:
        """Stop intake and drain within ``timeout_s``. Idempotent."""
        await self.lifecycle.stop(lambda: self._halt(timeout_s))

    async def _halt(self, timeout_s: float) -> None:
        if self._puller is not None:
            await self._puller.stop(timeout_s)
        if self._session is not None:
            await self._session.close()
            self._session = None
