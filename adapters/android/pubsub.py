"""Cloud Pub/Sub REST client for a pull subscription (no gRPC): pull, acknowledge, modifyAckDeadline.

* ``GET {base}/{subscription}``: the subscription (``mdm-broker android check`` reads it);
* ``POST {base}/{subscription}:pull`` ``{"maxMessages": n}`` -> ``{"receivedMessages": [...]}``;
  each item has ``ackId``, ``message`` (``data`` base64, ``attributes``, ``messageId``,
  ``publishTime``) and ``deliveryAttempt`` (only when the subscription has a dead-letter policy).
  Pub/Sub may hold the request a while when nothing is pending, or answer ``{}`` at once.
* ``POST {base}/{subscription}:acknowledge`` ``{"ackIds": [...]}`` -> ``{}``. Acking an id whose
  deadline passed may succeed although the message was already redelivered (that copy is then
  a duplicate the idempotent consumer skips).
* ``POST {base}/{subscription}:modifyAckDeadline`` ``{"ackIds": [...], "ackDeadlineSeconds": s}``:
  0..600 s counted from the request; 0 makes the message available again at once (a nack).

Errors are translated by :class:`adapters.android.api.GoogleApi` (429/5xx/network ->
:class:`VendorUnavailableError`, 401/403 -> :class:`VendorAuthError`, other 4xx
:class:`AdapterError`). Ack ids go out in chunks of :data:`MAX_IDS_PER_REQUEST`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from adapters.android.api import GoogleApi
from adapters.android.oauth import TokenProvider
from broker.errors import VendorUnavailableError
from broker.metrics import BrokerMetrics

PUBSUB_API_BASE_URL = "https://pubsub.googleapis.com/v1"
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
MAX_IDS_PER_REQUEST = 1000
MAX_ACK_DEADLINE_S = 600


@dataclass(frozen=True)
class ReceivedMessage:
    """One pulled message: its ack id (valid for this delivery only) and the message itself."""

    ack_id: str = field(repr=False)
    message: dict[str, Any]
    delivery_attempt: int | None = None

    @property
    def message_id(self) -> str:
        value = self.message.get("messageId")
        return value if isinstance(value, str) else "?"


def parse_pull_response(body: bytes) -> list[ReceivedMessage]:
    """``receivedMessages`` of a pull response (an empty body or ``{}`` means none)."""
    try:
        doc = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise VendorUnavailableError("pubsub pull returned non-JSON") from None
    if not isinstance(doc, dict):
        raise VendorUnavailableError("pubsub pull returned a non-object")
    items = doc.get("receivedMessages") or []
    if not isinstance(items, list):
        raise VendorUnavailableError("pubsub pull: receivedMessages is not a list")
    out: list[ReceivedMessage] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("ackId"), str):
            raise VendorUnavailableError("pubsub pull: a received message has no ackId")
        message = item.get("message")
        attempt = item.get("deliveryAttempt")
        out.append(
            ReceivedMessage(
                ack_id=item["ackId"],
                message=message if isinstance(message, dict) else {},
                delivery_attempt=attempt if isinstance(attempt, int) and attempt > 0 else None,
            )
        )
    return out


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + MAX_IDS_PER_REQUEST]) for i in range(0, len(ids), MAX_IDS_PER_REQUEST)]


class PubsubClient:
    """The three subscription methods the broker uses, for one subscription."""

    def __init__(
        self,
        *,
        base_url: str,
        subscription: str,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        metrics: BrokerMetrics,
        api_timeout_s: float,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/{subscription}"
        self._api = GoogleApi(session=session, tokens=tokens, metrics=metrics)
        self._api_timeout_s = api_timeout_s

    async def get_subscription(self) -> dict[str, Any]:
        """``GET {subscription}``: its ``topic``, ``ackDeadlineSeconds``, ... (needs the
        ``pubsub.subscriptions.get`` permission, e.g. roles/pubsub.viewer)."""
        body = await self._api.send("GET", "pubsub_get", self._url, self._api_timeout_s)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise VendorUnavailableError("pubsub subscriptions.get returned non-JSON") from None
        return doc if isinstance(doc, dict) else {}

    async def pull(self, max_messages: int, timeout_s: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages (maybe none); the server may hold the request."""
        body = await self._api.post(
            "pubsub_pull", f"{self._url}:pull", timeout_s, json_body={"maxMessages": max_messages}
        )
        return parse_pull_response(body)

    async def acknowledge(self, ack_ids: Sequence[str], timeout_s: float) -> None:
        """Acknowledge; returns once Pub/Sub answered 2xx for every chunk."""
        for chunk in _chunks(ack_ids):
            await self._api.post(
                "pubsub_ack",
                f"{self._url}:acknowledge",
                min(timeout_s, self._api_timeout_s),
                json_body={"ackIds": chunk},
            )

    async def modify_ack_deadline(
        self, ack_ids: Sequence[str], deadline_s: int, timeout_s: float
    ) -> None:
        """Set the deadline of these deliveries to ``deadline_s`` from now (0 = nack)."""
        seconds = max(0, min(MAX_ACK_DEADLINE_S, int(deadline_s)))
        for chunk in _chunks(ack_ids):
            await self._api.post(
                "pubsub_modack",
                f"{self._url}:modifyAckDeadline",
                min(timeout_s, self._api_timeout_s),
                json_body={"ackIds": chunk, "ackDeadlineSeconds": seconds},
            )
