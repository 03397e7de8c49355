"""``POST /apple/{tenant}/notifications``: Apple's notification push, acknowledged after Kafka.

Answers, in the order the checks run:

* 404 unknown tenant; 401 missing or wrong ``Authorization: Bearer`` token (constant-time compare
  against every accepted token of the tenant). Nothing is written; counted in
  ``mdm_broker_rejected_total{vendor="apple",reason}``; the token is never logged.
* 503 + ``Retry-After`` while Kafka is known to be failing (Apple retries up to 3 times).
* 413 body larger than ``apple.max_body_bytes`` (nothing written).
* 400 + a dead-letter record (raw body, ``dlq-reason`` header ``malformed``, ``schema`` or
  ``uid_mismatch``) for an authenticated body that is not JSON or violates the documented shape.
* 2xx only after ``publisher.publish`` returned, i.e. after the Kafka ack. A publish failure
  (:class:`~broker.errors.PublishError`) answers 503 + Retry-After: Apple redelivers the same
  ``notificationId``, which the idempotent consumer dedupes.

``TEST_NOTIFICATION`` follows the same path (published as ``mdm.test``) and gets 2xx, so Apple
accepts the client config.
"""

from __future__ import annotations

import hmac
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson
from aiohttp import web
from pydantic import SecretStr

from adapters.apple.normalize import normalize
from adapters.apple.settings import AppleSettings
from broker.errors import NormalizationError, PublishError
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics, RejectReason
from broker.publisher import KafkaPublisher

log = logging.getLogger(__name__)

VENDOR = "apple"
_READ_CHUNK = 65_536


def bearer_token(header: str | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode()


def token_accepted(presented: bytes | None, accepted: Sequence[SecretStr]) -> bool:
    """Constant-time check of ``presented`` against every accepted token (no early exit)."""
    if presented is None:
        return False
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(presented, token.get_secret_value().encode())
    return matched


class RecentIds:
    """A bounded FIFO of recently published (uId, notificationId) pairs.

    Only ids whose publish returned are added, so answering 2xx for a repeat is safe; this only
    saves Kafka writes, correctness rests on the idempotent consumer.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._ids

    def add(self, key: tuple[str, str]) -> None:
        if self._capacity <= 0:
            return
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


class AppleWebhook:
    """The request handler; ``on_published(tenant, event)`` runs after each Kafka ack."""

    def __init__(
        self,
        settings: AppleSettings,
        publisher: KafkaPublisher,
        health: KafkaHealth,
        metrics: BrokerMetrics,
        on_published: Callable[[str, CanonicalEvent], None] | None = None,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._health = health
        self._metrics = metrics
        self._on_published = on_published
        self._recent = RecentIds(settings.dedupe_window)

    def route(self) -> web.RouteDef:
        return web.post("/apple/{tenant}/notifications", self.handle)

    def _reject(self, status: int, reason: str, tenant: str, **headers: str) -> web.Response:
        self._metrics.rejected.labels(VENDOR, reason).inc()
        log.warning(
            "apple notification rejected: tenant=%r status=%d reason=%s", tenant, status, reason
        )
        body = orjson.dumps({"error": reason})
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers or None
        )

    def _unavailable(self, tenant: str) -> web.Response:
        return self._reject(
            503,
            RejectReason.KAFKA_UNAVAILABLE,
            tenant,
            **{"Retry-After": str(self._settings.retry_after_s)},
        )

    async def handle(self, request: web.Request) -> web.Response:
        tenant_name = request.match_info["tenant"][:64]
        tenant = self._settings.tenants.get(tenant_name)
        if tenant is None:
            return self._reject(404, RejectReason.UNKNOWN_TENANT, tenant_name)
        presented = bearer_token(request.headers.get("Authorization"))
        if not token_accepted(presented, tenant.notification_auth_tokens):
            return self._reject(401, RejectReason.UNAUTHORIZED, tenant_name)
        if not self._health.healthy:
            return self._unavailable(tenant_name)
        body = await self._read_limited(request)
        if body is None:
            return self._reject(413, RejectReason.TOO_LARGE, tenant_name)
        received_at = datetime.now(UTC)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return await self._dead_letter(body, tenant_name, RejectReason.MALFORMED, str(exc))
        try:
            event = normalize(raw, received_at=received_at, expected_uid=tenant.expected_uid)
        except NormalizationError as exc:
            return await self._dead_letter(body, tenant_name, exc.reason, exc.detail)
        self._metrics.notifications_received.labels(VENDOR, event.type.value).inc()
        key = event.idempotency_key
        if key in self._recent:
            self._metrics.duplicates_dropped.labels(VENDOR).inc()
            return web.json_response({"status": "duplicate"})
        try:
            await self._publisher.publish([event])
        except PublishError as exc:
            log.warning("apple notification not published (answering 503): %s", exc)
            return self._unavailable(tenant_name)
        self._recent.add(key)
        if self._on_published is not None:
            self._on_published(tenant_name, event)
        return web.json_response({"status": "accepted"})

    async def _read_limited(self, request: web.Request) -> bytes | None:
        """The body, or None when it exceeds ``max_body_bytes`` (read stops at the limit)."""
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        body = bytearray()
        while chunk := await request.content.read(_READ_CHUNK):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    async def _dead_letter(
        self, body: bytes, tenant: str, reason: str, detail: str
    ) -> web.Response:
        try:
            await self._publisher.dead_letter(
                body,
                vendor=VENDOR,
                reason=reason,
                detail=detail,
                tenant=tenant,
                content_type="application/json",
            )
        except PublishError as exc:
            log.warning("apple dead letter not written (answering 503): %s", exc)
            return self._unavailable(tenant)
        return self._reject(400, reason, tenant)
