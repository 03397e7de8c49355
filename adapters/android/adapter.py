"""The Google Play EMM adapter: service-account OAuth + concurrent long-poll pullers.

Lifecycle (see :mod:`broker.adapter`): ``start()`` opens one HTTP session and starts
``android.pullers`` pull loops; ``stop(timeout_s)`` cancels pulls in flight (their sets are not
acked and Google redelivers them), lets sets being published finish within ``timeout_s``, then
closes the session. No HTTP routes: this adapter only pulls.
"""

from __future__ import annotations

import logging

from adapters.android.api import EmmClient
from adapters.android.metrics import AndroidMetrics
from adapters.android.normalize import normalize_notification
from adapters.android.oauth import TokenProvider
from adapters.android.pull_adapter import PullAdapter, new_backoff
from adapters.android.puller import LongPollPuller, Normalizer
from adapters.android.settings import AndroidSettings
from adapters.android.source import EmmNotificationSource
from broker.adapter import AdapterContext

log = logging.getLogger(__name__)


class AndroidAdapter(PullAdapter[LongPollPuller]):
    """Pulls EMM notification sets for one service account and publishes them to Kafka."""

    def __init__(
        self,
        ctx: AdapterContext,
        settings: AndroidSettings,
        normalize: Normalizer = normalize_notification,
    ) -> None:
        super().__init__(ctx, "AndroidAdapter")
        self._settings = settings
        self._normalize = normalize
        self._metrics = AndroidMetrics(ctx.metrics.registry)

    @property
    def name(self) -> str:
        return "android"

    async def _start(self) -> None:
        s = self._settings
        session = self._open_session(limit=s.pullers * 2 + 4)
        tokens = TokenProvider(s, session)
        client = EmmClient(
            base_url=s.api_base_url,
            session=session,
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
            backoff=lambda: new_backoff(s),
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


def build(ctx: AdapterContext, settings: AndroidSettings) -> AndroidAdapter | None:
    """The adapter when ``android.enabled``, else None."""
    if not settings.enabled:
        return None
    return AndroidAdapter(ctx, settings)
