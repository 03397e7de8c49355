"""The protocol every vendor adapter implements, and what the broker hands each adapter.

Data path (DESIGN.md section 2): vendor -> adapter (auth, parse, normalize) -> publisher (Kafka ack)
-> adapter acknowledges the vendor (HTTP 2xx / acknowledgeNotificationSet / cursor advance).
An adapter never acknowledges its vendor before ``await ctx.publisher.publish(...)`` returned.

Lifecycle, driven by :class:`broker.app.BrokerApp`:

1. ``routes()`` is read once, before the HTTP server starts (push adapters add their webhook).
2. ``start()`` starts background work (pullers, pollers). It must return promptly.
3. ``stop(timeout_s)`` stops taking new vendor work, finishes or abandons in-flight work within
   ``timeout_s`` (abandoned work must not have been acknowledged to the vendor, so the vendor
   redelivers it), and returns. It is called before the publisher is flushed and closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aiohttp import web

from broker.supervisor import Supervisor

if TYPE_CHECKING:
    from broker.health import KafkaHealth
    from broker.metrics import BrokerMetrics
    from broker.settings import KafkaSettings
    from broker.sink import StateSink


@dataclass(frozen=True)
class AdapterContext:
    """Shared services an adapter may use. Adapters must not create their own Kafka producers.

    Every long-lived background task runs under ``supervisor`` (restart with backoff, /readyz).
    """

    kafka: KafkaSettings
    publisher: StateSink
    health: KafkaHealth
    metrics: BrokerMetrics
    supervisor: Supervisor = field(default_factory=Supervisor)


@runtime_checkable
class Adapter(Protocol):
    """One vendor integration inside the broker process."""

    @property
    def name(self) -> str:
        """Vendor name, also the ``vendor`` metrics label: ``apple``, ``android`` or ``kapua``."""
        ...

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes to mount on the broker's server (empty for pull adapters)."""
        ...

    async def start(self) -> None:
        """Start background work; returns promptly. Idempotent."""
        ...

    async def stop(self, timeout_s: float) -> None:
        """Stop intake and drain in-flight work within ``timeout_s``. Idempotent."""
        ...

    def ready(self) -> bool:
        """False while the adapter cannot do its job (e.g. vendor credentials rejected)."""
        ...


class AdapterFactory(Protocol):
    """``build(ctx) -> Adapter | None``: returns None when the adapter is disabled in settings.

    Each vendor package exposes ``build(ctx, settings)`` taking its own settings section; the
    composition root (:mod:`broker.app.registry`) binds the section and hands out factories.
    """

    def __call__(self, ctx: AdapterContext) -> Adapter | None: ...
