"""The Android Management API adapter: service-account OAuth + concurrent Pub/Sub pullers.

Lifecycle (see :mod:`broker.adapter`): ``start()`` opens one HTTP session and starts
``amapi.pullers`` pull loops; ``stop(timeout_s)`` cancels pulls in flight (messages they had leased
are not acked and Pub/Sub redelivers them), lets messages being published finish within
``timeout_s``, then closes the session. No HTTP routes. Runs beside the EMM adapter (``android``).
"""

from __future__ import annotations

import logging

from adapters.android.amapi_normalize import normalize_message
from adapters.android.amapi_settings import AmapiSettings
from adapters.android.metrics import AmapiMetrics
from adapters.android.oauth import TokenProvider
from adapters.android.pubsub import PubsubClient
from adapters.android.pubsub_puller import LeasePolicy, PubsubPuller
from adapters.android.pull_adapter import PullAdapter, new_backoff
from adapters.android.source import PubsubNotificationSource
from broker.adapter import AdapterContext

log = logging.getLogger(__name__)


def lease_policy(s: AmapiSettings) -> LeasePolicy:
    return LeasePolicy(
        ack_deadline_s=s.ack_deadline_s,
        lease_extension_s=s.lease_extension_s,
        extend_before_s=s.extend_before_s,
        ack_margin_s=s.ack_margin_s,
        max_lease_s=s.max_lease_s,
        api_timeout_s=s.api_timeout_s,
    )


class AmapiAdapter(PullAdapter[PubsubPuller]):
    """Pulls AMAPI notifications from one Pub/Sub subscription and publishes them to Kafka."""

    def __init__(self, ctx: AdapterContext, settings: AmapiSettings) -> None:
        super().__init__(ctx, "AmapiAdapter")
        self._settings = settings
        self._metrics = AmapiMetrics(ctx.metrics.registry)

    @property
    def name(self) -> str:
        return "amapi"

    async def _start(self) -> None:
        s = self._settings
        session = self._open_session(limit=s.pullers * 3 + 4)
        client = PubsubClient(
            base_url=s.api_base_url,
            subscription=s.subscription,
            session=session,
            tokens=TokenProvider(s, session),
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
            backoff=lambda: new_backoff(s),
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


def build(ctx: AdapterContext, settings: AmapiSettings) -> AmapiAdapter | None:
    """The adapter when ``amapi.enabled``, else None."""
    if not settings.enabled:
        return None
    return AmapiAdapter(ctx, settings)
