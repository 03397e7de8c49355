"""The Google Play EMM adapter: service-account OAuth + concurrent long-poll pullers.

Lifecycle (see :mod:`broker.adapter`): ``start()`` opens one HTTP session and starts
``android.pullers`` pull loops; ``stop(timeout_s)`` cancels pulls in flight (their sets are not
acked and Google redelivers them), lets sets being published finish within ``timeout_s``, then
closes the session. No HTTP routes: this adapter only pulls.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from adapters.android.api import EmmClient
from adapters.android.metrics import AndroidMetrics
from adapters.android.normalize import normalize_notification
from adapters.android.oauth import TokenProvider
from adapters.android.puller import LongPollPuller, Normalizer
from adapters.android.settings import AndroidSettings
from adapters.android.source import EmmNotificationSource
from broker.adapter import AdapterContext
from broker.lifecycle import Lifecycle
from broker.retry import Backoff

log = logging.getLogger(__name__)

_UNDO_STOP_S = 5.0
"""Drain budget when a failed start() stops what it had started."""


class AndroidAdapter:
    """Pulls EMM notification sets for one service account and publishes them to Kafka."""

    def __init__(
        self,
        ctx: AdapterContext,
        settings: AndroidSettings,
        normalize: Normalizer = normalize_notification,
    ) -> None:
        self._ctx = ctx
        self._settings = settings
        self._normalize = normalize
        self._metrics = AndroidMetrics(ctx.metrics.registry)
        self._session: aiohttp.ClientSession | None = None
        self._puller: LongPollPuller | None = None
        self.lifecycle = Lifecycle("AndroidAdapter")

    @property
    def name(self) -> str:
        return "android"

    @property
    def puller(self) -> LongPollPuller | None:
        return self._puller

    def routes(self) -> list[web.RouteDef]:
        return []

    def ready(self) -> bool:
        """False while the token endpoint or the API rejects our credentials."""
        return self._puller is None or self._puller.auth_ok

    async def start(self) -> None:
        """Start background work (the one lifecycle: idempotent, no restart after stop)."""
        await self.lifecycle.start(self._start, undo=lambda: self._halt(_UNDO_STOP_S))

    async def _start(self) -> None:
        s = self._settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.pullers * 2 + 4),
            raise_for_status=False,
        )
        tokens = TokenProvider(s, self._session)
        client = EmmClient(
            base_url=s.api_base_url,
            session=self._session,
            tokens=tokens,
            metrics=self._ctx.metrics,
            api_timeout_s=s.api_timeout_s,
        )
        source = EmmNotificationSource(
            client, request_mode=s.request_mode, pull_timeout_s=s.pull_timeout_s
        )
        self._puller = LongPollPuller(
            source=source,
            normalize=self._normalize,
            publisher=self._ctx.publisher,
            health=self._ctx.health,
            metrics=self._ctx.metrics,
            android_metrics=self._metrics,
            pullers=s.pullers,
            ack_budget_s=s.ack_budget_s,
            backoff=lambda: Backoff(
                s.backoff_initial_s,
                s.backoff_max_s,
                multiplier=s.backoff_multiplier,
                jitter=s.backoff_jitter,
            ),
            idle_pause_s=s.idle_pause_s if s.request_mode == "returnImmediately" else 0.0,
            supervisor=self._ctx.supervisor,
        )
        await self._puller.start()
        log.info(
            "android: %d puller(s) on %s (%s, ack budget %.1fs)",
            s.pullers,
            s.api_base_url,
            s.request_mode,
            s.ack_budget_s,
        )

    async def stop(self, timeout_s: float) -> None:
        """Stop intake and drain within ``timeout_s``. Idempotent."""
        await self.lifecycle.stop(lambda: self._halt(timeout_s))

    async def _halt(self, timeout_s: float) -> None:
        if self._puller is not None:
            await self._puller.stop(timeout_s)
        if self._session is not None:
            await self._session.close()
            self._session = None


def build(ctx: AdapterContext, settings: AndroidSettings) -> AndroidAdapter | None:
    """The adapter when ``android.enabled``, else None."""
    if not settings.enabled:
        return None
    return AndroidAdapter(ctx, settings)
