"""The Android Management API adapter: service-account OAuth + concurrent Pub/Sub pullers.

Lifecycle (see :mod:`broker.adapter`): ``start()`` opens one HTTP session and starts
``amapi.pullers`` pull loops; ``stop(timeout_s)`` cancels pulls in flight (messages they had leased
are not acked and Pub/Sub redelivers them), lets messages being published finish within
``timeout_s``, then closes the session. No HTTP routes. Runs beside the EMM adapter (``android``).
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from adapters.android.amapi_normalize import normalize_message
from adapters.android.amapi_settings import AmapiSettings
from adapters.android.metrics import AmapiMetrics
from adapters.android.oauth import TokenProvider
from adapters.android.pubsub import PubsubClient
from adapters.android.pubsub_puller import LeasePolicy, PubsubPuller
from adapters.android.source import PubsubNotificationSource
from broker.adapter import AdapterContext
from broker.lifecycle import Lifecycle
from broker.retry import Backoff

log = logging.getLogger(__name__)

_UNDO_STOP_S = 5.0
"""Drain budget when a failed start() stops what it had started."""


def lease_policy(s: AmapiSettings) -> LeasePolicy:
    return LeasePolicy(
        ack_deadline_s=s.ack_deadline_s,
        lease_extension_s=s.lease_extension_s,
        extend_before_s=s.extend_before_s,
        ack_margin_s=s.ack_margin_s,
        max_lease_s=s.max_lease_s,
        api_timeout_s=s.api_timeout_s,
    )


class AmapiAdapter:
    """Pulls AMAPI notifications from one Pub/Sub subscription and publishes them to Kafka."""

    def __init__(self, ctx: AdapterContext, settings: AmapiSettings) -> None:
        self._ctx = ctx
        self._settings = settings
        self._metrics = AmapiMetrics(ctx.metrics.registry)
        self._session: aiohttp.ClientSession | None = None
        self._puller: PubsubPuller | None = None
        self.lifecycle = Lifecycle("AmapiAdapter")

    @property
    def name(self) -> str:
        return "amapi"

    @property
    def puller(self) -> PubsubPuller | None:
        return self._puller

    def routes(self) -> list[web.RouteDef]:
        return []

    def ready(self) -> bool:
        """False while the token endpoint or Pub/Sub rejects our credentials."""
        return self._puller is None or self._puller.auth_ok

    async def start(self) -> None:
        """Start background work (the one lifecycle: idempotent, no restart after stop)."""
        await self.lifecycle.start(self._start, undo=lambda: self._halt(_UNDO_STOP_S))

    async def _start(self) -> None:
        s = self._settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.pullers * 3 + 4), raise_for_status=False
        )
        client = PubsubClient(
            base_url=s.api_base_url,
            subscription=s.subscription,
            session=self._session,
            tokens=TokenProvider(s, self._session),
            metrics=self._ctx.metrics,
            api_timeout_s=s.api_timeout_s,
        )
        self._puller = PubsubPuller(
            source=PubsubNotificationSource(
                client, max_messages=s.max_messages, pull_timeout_s=s.pull_timeout_s
            ),
            normalize=normalize_message,
            publisher=self._ctx.publisher,
            health=self._ctx.health,
            metrics=self._ctx.metrics,
            amapi_metrics=self._metrics,
            pullers=s.pullers,
            policy=lease_policy(s),
            backoff=lambda: Backoff(
                s.backoff_initial_s,
                s.backoff_max_s,
                multiplier=s.backoff_multiplier,
                jitter=s.backoff_jitter,
            ),
            supervisor=self._ctx.supervisor,
        )
        await self._puller.start()
        log.info(
            "amapi: %d puller(s) on %s/%s (ack deadline %.0fs, extensions of %ds)",
            s.pullers,
            s.api_base_url,
            s.subscription,
            s.ack_deadline_s,
            s.lease_extension_s,
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


def build(ctx: AdapterContext, settings: AmapiSettings) -> AmapiAdapter | None:
    """The adapter when ``amapi.enabled``, else None."""
    if not settings.enabled:
        return None
    return AmapiAdapter(ctx, settings)
