"""Kapua REST client: authentication, bounded concurrency and rate, retries with backoff.

Guarantees of every call:

* at most ``max_concurrent_requests`` requests in flight and ``max_requests_per_s`` on average;
* 5xx (including Kapua's 500 for device-management timeouts), 429, network errors and timeouts are
  retried up to ``max_retries`` times with jittered exponential backoff, then raised as
  :class:`~adapters.kapua.errors.KapuaUnavailableError` (retriable);
* a 2xx whose body is not JSON, or a list that violates ``kapuaListResult``, raises
  :class:`~adapters.kapua.errors.KapuaBadResponseError` (counted with status ``bad_body``);
* a 401 (empty body: expired or invalidated token) makes the client log in again and repeat the
  request once; a second 401 raises :class:`~adapters.kapua.errors.KapuaAuthError`;
* other errors are raised as the typed errors of :mod:`adapters.kapua.errors`; every failure is
  counted in ``mdm_broker_vendor_api_errors_total{vendor="kapua"}`` and logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import ValidationError

from adapters.kapua.auth import TokenManager
from adapters.kapua.errors import (
    KapuaAuthError,
    KapuaBadResponseError,
    KapuaUnavailableError,
    error_for_status,
)
from adapters.kapua.metrics import Endpoint, KapuaMetrics
from adapters.kapua.models import ListResult
from adapters.kapua.ratelimit import RateLimiter
from adapters.kapua.settings import KapuaSettings
from broker.errors import NotStartedError
from broker.lifecycle import AsyncService, Lifecycle
from broker.retry import Backoff

log = logging.getLogger(__name__)


def _seg(value: str) -> str:
    return quote(value, safe="")


class KapuaClient(AsyncService):
    """One authenticated session against one Kapua REST endpoint."""

    def __init__(self, settings: KapuaSettings, metrics: KapuaMetrics, user_agent: str) -> None:
        self._settings = settings
        self._metrics = metrics
        self._base = settings.base_url.rstrip("/") + "/"
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._limiter = RateLimiter(settings.max_requests_per_s)
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)
        self.tokens = TokenManager(settings, self._post_public, metrics)
        self._retry = Backoff(settings.backoff_base_s, settings.backoff_max_s)
        self.lifecycle = Lifecycle("KapuaClient")

    async def start(self) -> None:
        """Open the HTTP session (the one lifecycle: idempotent, no restart after stop)."""
        await self.lifecycle.start(self._start)

    async def _start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.request_timeout_s)
        self._session = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": self._user_agent}
        )

    async def stop(self) -> None:
        """Log out (best effort) and close the HTTP session. Idempotent."""
        await self.lifecycle.stop(self._halt)

    async def _halt(self) -> None:
        if self._session is None:
            return
        await self.tokens.logout(self._logout)
        await self._session.close()
        self._session = None

    # -- typed calls -------------------------------------------------------------------------

    async def list_devices(self, scope: str, offset: int, limit: int) -> ListResult:
        doc = await self.call(
            Endpoint.DEVICES, "GET", f"{_seg(scope)}/devices", params=_page(offset, limit)
        )
        return self._list(Endpoint.DEVICES, doc)

    async def list_operations(self, scope: str, device: str, offset: int, limit: int) -> ListResult:
        path = f"{_seg(scope)}/devices/{_seg(device)}/operations"
        doc = await self.call(Endpoint.OPERATIONS, "GET", path, params=_page(offset, limit))
        return self._list(Endpoint.OPERATIONS, doc)

    async def get_operation(self, scope: str, device: str, operation: str) -> dict[str, Any]:
        path = f"{_seg(scope)}/devices/{_seg(device)}/operations/{_seg(operation)}"
        doc = await self.call(Endpoint.OPERATION, "GET", path)
        if not isinstance(doc, dict):
            raise KapuaUnavailableError("operation answer is not a JSON object")
        return doc

    async def count_notifications(self, scope: str, device: str, operation: str) -> int:
        """``POST .../notifications/_count`` (body: a kapuaQuery; only paging fields count)."""
        path = f"{_seg(scope)}/devices/{_seg(device)}/operations/{_seg(operation)}/notifications/_count"
        doc = await self.call(
            Endpoint.NOTIFICATIONS_COUNT, "POST", path, json={"offset": 0, "limit": 1}
        )
        count = doc.get("count") if isinstance(doc, dict) else None
        if not isinstance(count, int):
            raise KapuaUnavailableError("countResult without an integer count")
        return count

    async def list_notifications(
        self, scope: str, device: str, operation: str, offset: int, limit: int
    ) -> ListResult:
        """One page of notifications in Kapua's default order (sentOn ascending)."""
        path = f"{_seg(scope)}/devices/{_seg(device)}/operations/{_seg(operation)}/notifications"
        params = _page(offset, limit) | {
            "askTotalCount": "true",
            "sortParam": "sentOn",
            "sortDir": "ASCENDING",
        }
        doc = await self.call(Endpoint.NOTIFICATIONS, "GET", path, params=params)
        return self._list(Endpoint.NOTIFICATIONS, doc)

    def _list(self, endpoint: Endpoint, doc: Any) -> ListResult:
        try:
            return ListResult.model_validate(doc)
        except ValidationError as exc:
            raise self._bad_body(
                endpoint, f"not a kapuaListResult ({exc.error_count()} error(s))"
            ) from exc

    def _bad_body(self, endpoint: Endpoint, why: str) -> KapuaBadResponseError:
        self._metrics.broker.vendor_api_errors.labels("kapua", endpoint.value, "bad_body").inc()
        self._metrics.request(endpoint, "bad_body")
        error = KapuaBadResponseError(f"kapua {endpoint.value}: 2xx answer {why}")
        log.warning("%s", error)
        return error

    # -- plumbing ----------------------------------------------------------------------------

    async def call(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """An authenticated request with the retry/re-login rules of the module docstring."""
        attempt = 0
        relogged = False
        while True:
            token = await self.tokens.token()
            try:
                status, body = await self._send(endpoint, method, path, params, json, token)
            except KapuaUnavailableError as exc:
                if attempt >= self._settings.max_retries:
                    raise
                attempt += 1
                await self._backoff(endpoint, attempt, exc)
                continue
            if 200 <= status < 300:
                try:
                    doc = orjson.loads(body) if body else None
                except orjson.JSONDecodeError:
                    raise self._bad_body(endpoint, "is not JSON") from None
                self._metrics.request(endpoint, "ok")
                return doc
            self._metrics.api_error(endpoint, status)
            if status == 401 and not relogged:
                self._metrics.request(endpoint, "unauthorized")
                relogged = True
                await self.tokens.invalidate(token)
                continue
            error = error_for_status(status, body, f"{method} {endpoint.value}")
            self._metrics.request(endpoint, "error")
            if error.retriable and attempt < self._settings.max_retries:
                attempt += 1
                await self._backoff(endpoint, attempt, error)
                continue
            log.warning("kapua %s failed: %s", endpoint.value, error)
            raise error

    async def _post_public(self, endpoint: Endpoint, path: str, body: dict[str, Any]) -> Any:
        """Unauthenticated POST (the /authentication endpoints), with 5xx retries."""
        attempt = 0
        while True:
            try:
                status, raw = await self._send(endpoint, "POST", path, None, body, None)
            except KapuaUnavailableError as exc:
                if attempt >= self._settings.max_retries:
                    raise
                attempt += 1
                await self._backoff(endpoint, attempt, exc)
                continue
            if 200 <= status < 300:
                self._metrics.request(endpoint, "ok")
                return orjson.loads(raw) if raw else None
            self._metrics.api_error(endpoint, status)
            self._metrics.request(endpoint, "error")
            error = error_for_status(status, raw, f"POST {endpoint.value}")
            if status == 401:
                error = KapuaAuthError(str(error), status, getattr(error, "kapua_error_code", None))
            if error.retriable and attempt < self._settings.max_retries:
                attempt += 1
                await self._backoff(endpoint, attempt, error)
                continue
            log.warning("kapua %s failed: %s", endpoint.value, error)
            raise error

    async def _logout(self, token: str) -> None:
        await self._send(Endpoint.LOGOUT, "POST", "authentication/logout", None, None, token)

    async def _backoff(self, endpoint: Endpoint, attempt: int, error: Exception) -> None:
        retry_after = error.retry_after_s if isinstance(error, KapuaUnavailableError) else None
        delay = self._retry.delay(attempt, retry_after)
        self._metrics.retries.labels(endpoint.value).inc()
        log.info("kapua %s: %s; retry %d in %.2fs", endpoint.value, error, attempt, delay)
        await asyncio.sleep(delay)

    async def _send(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        params: dict[str, str] | None,
        json: dict[str, Any] | None,
        token: str | None,
    ) -> tuple[int, bytes]:
        if self._session is None:
            raise NotStartedError("KapuaClient is not started")
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = orjson.dumps(json) if json is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        await self._limiter.acquire()
        async with self._slots:
            try:
                async with self._session.request(
                    method, self._base + path, params=params, data=data, headers=headers
                ) as response:
                    return response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._metrics.api_error(endpoint, None)
                self._metrics.request(endpoint, "network")
                raise KapuaUnavailableError(
                    f"{method} {endpoint.value}: {type(exc).__name__}"
                ) from exc


def _page(offset: int, limit: int) -> dict[str, str]:
    return {"offset": str(offset), "limit": str(limit)}
