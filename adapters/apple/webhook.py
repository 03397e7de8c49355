"""``POST /apple/{tenant}/notifications``: Apple's notification push, acknowledged after Kafka.

One rule for every answer:

* **Refused before anything is stored -> 4xx**, nothing written, counted in
  ``mdm_broker_rejected_total{vendor="apple",reason}``: 404 unknown tenant; 401 missing or wrong
  ``Authorization: Bearer`` token (constant-time compare against every accepted token of the
  tenant; the token is never logged); 413 body larger than ``apple.max_body_bytes``; 405 any method
  but POST (aiohttp's router).
* **Kafka cannot take it -> 503 + ``Retry-After``**: while Kafka is known to be failing, or when the
  publish (or the dead-letter write) was not acked in time. Apple redelivers the same
  ``notificationId`` up to 3 times; nothing was acknowledged.
* **Durably stored -> 2xx** with a JSON body ``{"status": ..., "reason": ..., "id": ...}``, only
  after the Kafka ack:

  - ``accepted``: published on the events topic (``reason`` ``published``, or ``id_collision``
    when the id was derived, see below);
  - ``duplicate``: the same ``notificationId`` with the same content was published recently;
  - ``dead_lettered``: written, raw, to the DLQ topic with the reason in its headers: ``malformed``
    (not JSON), ``too_deep`` (nested deeper than ``apple.max_json_depth``), ``schema`` (documented
    shape violated, ids longer than their limits included), ``uid_mismatch``, a reason of
    :class:`~broker.errors.RecordRejectedError` (Kafka can never take the record, e.g. too large),
    or ``internal_error`` (an unexpected exception: logged with its traceback and counted in
    ``mdm_broker_internal_errors_total``). Apple must not retry a deterministic failure, so these
    are 2xx too.

  No exception between reading the body and the ack escapes as a 500.

Id collisions: the webhook keeps a digest of each recent id's content
(:class:`~broker.idwindow.RecentIdWindow`, bounded by ``dedupe_window`` entries and
``dedupe_window_bytes``). The same id with different content is published as
``{notificationId}~{first 16 hex of SHA-256 of the body}`` with the extension ``idcollision``,
counted in ``mdm_broker_id_collisions_total{vendor}`` and logged at WARNING.

The body is parsed once; ``data.raw`` in Kafka is the body's bytes, spliced in unchanged.
``TEST_NOTIFICATION`` follows the same path (published as ``mdm.test``) and gets 2xx, so Apple
accepts the client config.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr

from adapters.apple.normalize import normalize
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.errors import NormalizationError, PublishError, RecordRejectedError
from broker.events import CanonicalEvent
from broker.health import KafkaHealth
from broker.idwindow import IdVerdict, RecentIdWindow, content_digest
from broker.jsonlimits import nesting_exceeds
from broker.metrics import BrokerMetrics, Children, RejectReason
from broker.sink import EventSink

log = logging.getLogger(__name__)

VENDOR = "apple"
_READ_CHUNK = 65_536

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
DEAD_LETTERED = "dead_lettered"


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


class _KafkaUnavailable(Exception):
    """Internal: the input could not be stored because Kafka did not ack (answer 503)."""


def _stored(status: str, reason: str, event_id: str | None = None, **extra: str) -> web.Response:
    body: dict[str, Any] = {"status": status, "reason": reason}
    if event_id is not None:
        body["id"] = event_id
    body.update(extra)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class AppleWebhook:
    """The request handler; ``on_published(tenant, event)`` runs after each Kafka ack."""

    def __init__(
        self,
        settings: AppleSettings,
        publisher: EventSink,
        health: KafkaHealth,
        metrics: BrokerMetrics,
        on_published: Callable[[str, CanonicalEvent], None] | None = None,
        on_answer: Callable[[str, int], None] | None = None,
    ) -> None:
        """``on_answer(tenant, status)`` sees every answer's status (gap detection: a non-2xx
        answer may make Apple drop the notification after its retries)."""
        self._settings = settings
        self._publisher = publisher
        self._health = health
        self._metrics = metrics
        self._on_published = on_published
        self._on_answer = on_answer
        self._recent = RecentIdWindow(settings.dedupe_window, settings.dedupe_window_bytes)
        self._received = Children(metrics.notifications_received)

    @property
    def recent(self) -> RecentIdWindow:
        return self._recent

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
        if self._on_answer is None:
            return await self._handle(request)
        status = 500
        try:
            response = await self._handle(request)
            status = response.status
            return response
        finally:
            self._on_answer(request.match_info["tenant"][:64], status)

    async def _handle(self, request: web.Request) -> web.Response:
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
        try:
            return await self._store(body, tenant_name, tenant)
        except _KafkaUnavailable:
            return self._unavailable(tenant_name)
        except Exception:  # never a 500: whatever failed, the input goes to the DLQ
            self._metrics.internal_errors.labels(VENDOR).inc()
            log.exception("apple notification: unexpected error (dead-lettering the input)")
            try:
                return await self._dead_letter(
                    body, tenant_name, RejectReason.INTERNAL_ERROR, "unexpected error"
                )
            except _KafkaUnavailable:
                return self._unavailable(tenant_name)
            except Exception:
                log.exception("apple notification: dead letter failed (answering 503)")
                return self._unavailable(tenant_name)

    async def _store(
        self, body: bytes, tenant_name: str, tenant: AppleTenantSettings
    ) -> web.Response:
        """Publish or dead-letter ``body``; raises :class:`_KafkaUnavailable` when not acked."""
        received_at = datetime.now(UTC)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return await self._dead_letter(body, tenant_name, RejectReason.MALFORMED, str(exc))
        if nesting_exceeds(raw, self._settings.max_json_depth, body):
            detail = f"nested deeper than apple.max_json_depth={self._settings.max_json_depth}"
            return await self._dead_letter(body, tenant_name, RejectReason.TOO_DEEP, detail)
        try:
            event = normalize(
                raw, received_at=received_at, expected_uid=tenant.expected_uid, raw_json=body
            )
        except NormalizationError as exc:
            return await self._dead_letter(body, tenant_name, exc.reason, exc.detail)
        self._received(VENDOR, event.type.value).inc()
        digest = content_digest(body)
        decision = self._recent.begin(event.source, event.id, digest)
        if decision.verdict is IdVerdict.DUPLICATE:
            self._metrics.duplicates_dropped.labels(VENDOR).inc()
            return _stored(DUPLICATE, "recently published with the same content", decision.event_id)
        published = False
        try:
            reason = "published"
            if decision.verdict is IdVerdict.COLLISION:
                reason = "id_collision"
                self._metrics.id_collisions.labels(VENDOR).inc()
                log.warning(
                    "apple notificationId %r reused with different content (tenant=%r): "
                    "publishing as %r with idcollision",
                    event.id,
                    tenant_name,
                    decision.event_id,
                )
                event = event.with_collision_id(decision.event_id)
            try:
                await self._publisher.publish([event])
            except RecordRejectedError as exc:
                return await self._dead_letter(body, tenant_name, exc.reason, exc.detail)
            except PublishError as exc:
                log.warning("apple notification not published (answering 503): %s", exc)
                raise _KafkaUnavailable from exc
            published = True
        finally:
            self._recent.finish(event.source, decision, digest, published=published)
        self._after_ack(tenant_name, event)
        return _stored(ACCEPTED, reason, event.id, type=event.type.value)

    def _after_ack(self, tenant_name: str, event: CanonicalEvent) -> None:
        """Bookkeeping after the Kafka ack; a failure here is logged, the input stays accepted."""
        if self._on_published is None:
            return
        try:
            self._on_published(tenant_name, event)
        except Exception:
            self._metrics.internal_errors.labels(VENDOR).inc()
            log.exception("apple notification %r: bookkeeping after the ack failed", event.id)

    async def _read_limited(self, request: web.Request) -> bytes | None:
        """The body, or None when it exceeds ``max_body_bytes`` (read stops at the limit)."""
        limit = self._settings.max_body_bytes
        length = request.content_length
        if length is not None:  # announced: refused unread when too large, else read at once
            if length == 0:
                return b""  # readexactly(0) at EOF raises IncompleteReadError in aiohttp
            return None if length > limit else await request.content.readexactly(length)
        body = bytearray()  # chunked: read up to the limit
        while chunk := await request.content.read(_READ_CHUNK):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    async def _dead_letter(
        self, body: bytes, tenant: str, reason: str, detail: str
    ) -> web.Response:
        """Write ``body`` to the DLQ and answer 2xx ``dead_lettered``; raises
        :class:`_KafkaUnavailable` when the write was not acked."""
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
            raise _KafkaUnavailable from exc
        log.warning(
            "apple notification dead-lettered: tenant=%r reason=%s detail=%s",
            tenant,
            reason,
            detail[:200],
        )
        return _stored(DEAD_LETTERED, reason, detail=detail[:1024])
