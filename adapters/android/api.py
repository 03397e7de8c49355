"""Client of the three EMM API methods the broker needs (androidenterprise v1).

* ``POST {base}/enterprises/pullNotificationSet?requestMode=...`` -> :class:`NotificationSet`
* ``POST {base}/enterprises/acknowledgeNotificationSet?notificationSetId=...``
* ``POST {base}/enterprises/{enterpriseId}/sendTestPushNotification``

Errors are translated once, here: 429, 5xx, timeouts and network errors raise
:class:`VendorUnavailableError` (retriable; ``retry_after_s`` from ``Retry-After``); 401 drops the
cached access token and retries the call once with a fresh one, then raises
:class:`VendorAuthError`, as does 403 (scope or permission). Other 4xx raise
:class:`AdapterError`. Each failure is counted in ``mdm_broker_vendor_api_errors_total``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from adapters.android.oauth import TokenProvider
from broker.errors import AdapterError, VendorAuthError, VendorUnavailableError
from broker.metrics import BrokerMetrics
from broker.retry import parse_retry_after

log = logging.getLogger(__name__)

Operation = Literal["token", "pull", "ack", "test_push"]


@dataclass(frozen=True)
class NotificationSet:
    """One pulled set. ``set_id`` is None (and the list empty) when nothing was pending."""

    set_id: str | None
    notifications: list[Any]


def describe_google_error(status: int, body: bytes) -> str:
    """``HTTP 429 rateLimitExceeded: Rate Limit Exceeded`` from Google's JSON error format."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP {status}"
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status}"
    reason = ""
    errors = error.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        reason = str(errors[0].get("reason") or "")
    reason = reason or str(error.get("status") or "")
    message = str(error.get("message") or "")
    return f"HTTP {status}" + (f" {reason}" if reason else "") + (f": {message}" if message else "")


def status_label(status: int | None) -> str:
    """Bounded label value for a failed call: 401, 403, 404, 429, 4xx, 5xx or network."""
    if status is None:
        return "network"
    if status in (401, 403, 404, 429):
        return str(status)
    return "5xx" if status >= 500 else "4xx"


class GoogleApi:
    """Authenticated POSTs to a Google REST API with one shared ``aiohttp`` session.

    The error translation of the module docstring lives here, shared by the EMM and Pub/Sub
    clients; failures are counted as ``vendor_api_errors{vendor="android", operation, status}``.
    """

    def __init__(
        self, *, session: aiohttp.ClientSession, tokens: TokenProvider, metrics: BrokerMetrics
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._metrics = metrics

    async def post(
        self,
        operation: str,
        url: str,
        timeout_s: float,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> bytes:
        """POST and return the 2xx body; raises the typed errors of the module docstring."""
        return await self.send(
            "POST", operation, url, timeout_s, params=params, json_body=json_body
        )

    async def send(
        self,
        method: str,
        operation: str,
        url: str,
        timeout_s: float,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> bytes:
        """Send ``method`` and return the 2xx body; raises the typed errors of the module docstring."""
        data = None if json_body is None else orjson.dumps(json_body)
        headers = {} if data is None else {"Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                token = await self._tokens.get()
            except VendorAuthError:
                self._count("token", 400)
                raise
            except VendorUnavailableError as exc:
                self._count("token", exc.status)
                raise
            try:
                async with self._session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._count(operation, None)
                raise VendorUnavailableError(
                    f"{operation}: {type(exc).__name__} talking to the Google API"
                ) from exc
            if 200 <= status < 300:
                return body
            self._count(operation, status)
            detail = describe_google_error(status, body)
            if status == 401 and attempt == 1:
                log.info("android: %s got 401 (%s); fetching a new access token", operation, detail)
                self._tokens.invalidate()
                continue
            if status == 429 or status >= 500:
                raise VendorUnavailableError(
                    f"{operation}: {detail}",
                    status=status,
                    retry_after_s=parse_retry_after(retry_after),
                )
            if status in (401, 403):
                self._tokens.invalidate()
                raise VendorAuthError(f"{operation}: {detail}")
            raise AdapterError(f"{operation}: {detail}")
        raise AdapterError(f"{operation}: unreachable")  # pragma: no cover - loop always returns

    def _count(self, operation: str, status: int | None) -> None:
        self._metrics.vendor_api_errors.labels("android", operation, status_label(status)).inc()


class EmmClient:
    """Authenticated calls to the EMM API with one shared ``aiohttp`` session."""

    def __init__(
        self,
        *,
        base_url: str,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        metrics: BrokerMetrics,
        api_timeout_s: float,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._api = GoogleApi(session=session, tokens=tokens, metrics=metrics)
        self._api_timeout_s = api_timeout_s

    async def pull_notification_set(self, request_mode: str, timeout_s: float) -> NotificationSet:
        """One pull; blocks up to the server's hold time in ``waitForNotifications`` mode."""
        body = await self._call(
            "pull",
            f"{self._base}/enterprises/pullNotificationSet",
            {"requestMode": request_mode},
            timeout_s,
        )
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise VendorUnavailableError("pullNotificationSet returned non-JSON") from None
        if not isinstance(doc, dict):
            raise VendorUnavailableError("pullNotificationSet returned a non-object")
        notifications = doc.get("notification") or []
        set_id = doc.get("notificationSetId")
        if not isinstance(notifications, list):
            raise VendorUnavailableError("pullNotificationSet: 'notification' is not a list")
        if notifications and not isinstance(set_id, str):
            raise VendorUnavailableError("pullNotificationSet: notifications without a set id")
        return NotificationSet(set_id if notifications else None, notifications)

    async def acknowledge_notification_set(self, set_id: str, timeout_s: float) -> None:
        """Acknowledge a set; returns once the server answered 2xx."""
        await self._call(
            "ack",
            f"{self._base}/enterprises/acknowledgeNotificationSet",
            {"notificationSetId": set_id},
            min(timeout_s, self._api_timeout_s),
        )

    async def send_test_push_notification(self, enterprise_id: str) -> dict[str, Any]:
        """Ask Google to send a ``testNotification`` for ``enterprise_id``."""
        body = await self._call(
            "test_push",
            f"{self._base}/enterprises/{enterprise_id}/sendTestPushNotification",
            {},
            self._api_timeout_s,
        )
        doc = orjson.loads(body) if body else {}
        return doc if isinstance(doc, dict) else {}

    async def _call(
        self, operation: Operation, url: str, params: dict[str, str], timeout_s: float
    ) -> bytes:
        return await self._api.post(operation, url, timeout_s, params=params)
