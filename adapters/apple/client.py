"""Apps and Books Management API v2 client (aiohttp), as documented in VENDOR_NOTES.md section 1.

Guarantees:

* Every response body is checked for ``errorNumber`` whatever the HTTP status (Apple may answer
  200 with an error body). Errors map onto the broker's tree: 9601/9621/9625/9722 ->
  :class:`AppleAuthError` (not retriable), 9646 (rate limit), 9603 (internal error), HTTP 5xx and
  network errors -> :class:`~broker.errors.VendorUnavailableError` after ``api_max_attempts``
  tries with exponential backoff (``Retry-After`` honoured when given), anything else ->
  :class:`AppleApiError` at once.
* Requests of one client are spaced to stay under ``maxRequestPerSecond`` from the service config,
  which is cached for ``service_config_refresh_s`` (Apple: "sync every 5 minutes").
* Paginated reads follow ``nextPageIndex`` until it is absent and report the ``versionId`` of the
  first page (use it as the next ``sinceVersionId``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from adapters.apple.errors import (
    AppleApiError,
    AppleAuthError,
    AppleUnavailableError,
)
from adapters.apple.settings import AppleSettings
from broker.errors import AdapterError, NotStartedError, VendorUnavailableError
from broker.lifecycle import AsyncService, Lifecycle, LifecycleState
from broker.metrics import BrokerMetrics
from broker.retry import Backoff, parse_retry_after

log = logging.getLogger(__name__)

#: Longest Retry-After honoured; a longer one is treated as this (the call still fails after
#: ``api_max_attempts``).
_MAX_RETRY_AFTER_S = 600.0

AUTH_ERRORS = frozenset({9601, 9621, 9625, 9722})
RETRIABLE_ERRORS = frozenset({9603, 9646})
DEFAULT_MAX_RPS = 15.0
MAX_PAGES = 100_000
MAX_PARALLEL_PAGES = 5  # Apple: "don't submit more than five requests simultaneously"
BAD_PAGE_INDEX = 9650


@dataclass
class SyncResult:
    """All records of a paginated read, and the ``versionId`` of its first page."""

    items: list[dict[str, Any]] = field(default_factory=list)
    version_id: str | None = None
    uid: str | None = None
    pages: int = 0


class _Spacer:
    """Spaces request starts at least ``1/rps`` apart (one location's request budget)."""

    def __init__(self) -> None:
        self.rps = DEFAULT_MAX_RPS
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + 1.0 / max(self.rps, 0.1)
        if delay > 0:
            await asyncio.sleep(delay)


class SharedServiceConfig:
    """``GET /service/config`` is global (no sToken, the same for every location): one cache per
    process, shared by every location's client, so it costs one request per
    ``service_config_refresh_s`` for all locations together, never one per location or per sync."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.fetched_at = float("-inf")
        self.lock = asyncio.Lock()

    def expire(self) -> None:
        """Make the next call refresh it (as after ``service_config_refresh_s``)."""
        self.fetched_at = float("-inf")


class AppleApiClient(AsyncService):
    """One location's API client. Use ``async with`` (it owns an aiohttp session)."""

    def __init__(
        self,
        settings: AppleSettings,
        s_token: SecretStr,
        metrics: BrokerMetrics | None = None,
        user_agent: str | None = None,
        shared: SharedServiceConfig | None = None,
    ) -> None:
        self._settings = settings
        self._user_agent = user_agent
        self._s_token = s_token
        self._metrics = metrics
        self._base = settings.api_base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._spacer = _Spacer()
        # x3 per attempt, +-0..20 %; the cap only bounds a server's Retry-After
        self._retry = Backoff(
            settings.api_backoff_s,
            max(_MAX_RETRY_AFTER_S, settings.api_backoff_s * 3**settings.api_max_attempts),
            multiplier=3.0,
            jitter=0.2,
        )
        self._shared = shared if shared is not None else SharedServiceConfig()
        self.requests: dict[str, int] = {}
        """HTTP requests sent, by operation (e.g. ``get_assignments``), retries included."""
        self.lifecycle = Lifecycle("AppleApiClient")

    async def start(self) -> None:
        """Open the HTTP session (the one lifecycle: idempotent, no restart after stop). Calls
        made before start() open it on first use."""
        await self.lifecycle.start(self._start)

    async def _start(self) -> None:
        self._http()

    async def stop(self) -> None:
        """Close the HTTP session (also one opened on first use before start()). Idempotent."""
        await self.lifecycle.stop(self._halt)
        await self._halt()

    async def _halt(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self.lifecycle.state is LifecycleState.STOPPED:
                raise NotStartedError(
                    "AppleApiClient was stopped and cannot be started again; create a new one"
                )
            timeout = aiohttp.ClientTimeout(total=self._settings.api_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    # -- service config and limits ----------------------------------------------------------

    async def service_config(self, refresh: bool = False) -> dict[str, Any]:
        """``GET /service/config`` (no auth), cached for ``service_config_refresh_s`` (shared)."""
        shared = self._shared
        async with shared.lock:  # one refresh for every client sharing the cache
            age = time.monotonic() - shared.fetched_at
            if refresh or shared.doc is None or age > self._settings.service_config_refresh_s:
                shared.doc = await self._request(
                    "GET", "/service/config", operation="service_config", auth=False
                )
                shared.fetched_at = time.monotonic()
            doc = shared.doc
        self._apply_limits(doc)
        return doc

    def _apply_limits(self, doc: Mapping[str, Any]) -> None:
        limits = doc.get("limits")
        rps = limits.get("maxRequestPerSecond") if isinstance(limits, dict) else None
        if isinstance(rps, int | float) and rps > 0:
            self._spacer.rps = float(rps)

    async def limits(self) -> dict[str, Any]:
        limits = (await self.service_config()).get("limits", {})
        return limits if isinstance(limits, dict) else {}

    async def _refresh_limits(self) -> None:
        """Keep the cached limits fresh; on failure keep the last known ones (logged)."""
        shared = self._shared
        age = time.monotonic() - shared.fetched_at
        if shared.doc is not None and age <= self._settings.service_config_refresh_s:
            self._apply_limits(shared.doc)
            return
        try:
            await self.service_config()
        except AdapterError as exc:
            shared.fetched_at = time.monotonic()  # do not hammer; retry after the period
            log.warning("apple service config unavailable, keeping limits: %s", exc)

    # -- client config ----------------------------------------------------------------------

    async def get_client_config(self) -> dict[str, Any]:
        return await self._call("GET", "/client/config", operation="client_config")

    async def set_client_config(
        self,
        *,
        notification_types: Sequence[str] | None = None,
        notification_url: str | None = None,
        notification_auth_token: SecretStr | None = None,
        mdm_info: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /client/config``. Apple sends TEST_NOTIFICATION to the URL during this call and
        refuses the config (9728) when that delivery fails."""
        body: dict[str, Any] = {}
        if notification_types is not None:
            body["notificationTypes"] = list(notification_types)
        if notification_url is not None:
            body["notificationUrl"] = notification_url
        if notification_auth_token is not None:
            body["notificationAuthToken"] = notification_auth_token.get_secret_value()
        if mdm_info is not None:
            body["mdmInfo"] = dict(mdm_info)
        return await self._call("POST", "/client/config", operation="client_config", json=body)

    # -- async events -----------------------------------------------------------------------

    async def event_status(self, event_id: str) -> dict[str, Any]:
        """``GET /status?eventId=``; unknown ids raise AppleApiError with error_number 9708."""
        return await self._call(
            "GET", "/status", operation="event_status", params={"eventId": event_id}
        )

    async def associate(
        self,
        assets: Sequence[Mapping[str, str]],
        *,
        serial_numbers: Sequence[str] = (),
        client_user_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        return await self._manage("associate", assets, serial_numbers, client_user_ids)

    async def disassociate(
        self,
        assets: Sequence[Mapping[str, str]],
        *,
        serial_numbers: Sequence[str] = (),
        client_user_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        return await self._manage("disassociate", assets, serial_numbers, client_user_ids)

    async def revoke(
        self, *, serial_numbers: Sequence[str] = (), client_user_ids: Sequence[str] = ()
    ) -> dict[str, Any]:
        return await self._manage("revoke", None, serial_numbers, client_user_ids)

    async def _manage(
        self,
        action: str,
        assets: Sequence[Mapping[str, str]] | None,
        serial_numbers: Sequence[str],
        client_user_ids: Sequence[str],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if assets is not None:
            body["assets"] = [dict(a) for a in assets]
        if serial_numbers:
            body["serialNumbers"] = list(serial_numbers)
        if client_user_ids:
            body["clientUserIds"] = list(client_user_ids)
        return await self._call("POST", f"/assets/{action}", operation="manage_assets", json=body)

    async def manage_users(self, action: str, users: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """``POST /users/{create|update|retire}``; returns the EventResponse."""
        if action not in ("create", "update", "retire"):
            raise ValueError(f"unknown user action {action!r}")
        body = {"users": [dict(u) for u in users]}
        return await self._call("POST", f"/users/{action}", operation="manage_users", json=body)

    # -- paginated sync ---------------------------------------------------------------------

    async def sync(
        self,
        path: str,
        items_key: str,
        params: Mapping[str, str] | None = None,
        *,
        parallel: int = 1,
    ) -> SyncResult:
        """Every record of a paginated read, in page order, and the first page's ``versionId``.

        Page 0 is read first; when it announces ``totalPages``, the remaining pages are read with
        at most ``parallel`` (capped at 5, Apple's limit) requests in flight, then ``nextPageIndex``
        is followed from the last page in case the data set grew meanwhile. A 9650 (bad page
        index) after page 0 means the data set shrank during the read: the read ends there.
        """
        parallel = max(1, min(parallel, MAX_PARALLEL_PAGES))
        base = dict(params or {})
        result = SyncResult()
        first = await self._page(path, items_key, base, 0)
        version = first.get("versionId")
        result.version_id = version if isinstance(version, str) else None
        uid = first.get("uId")
        result.uid = uid if isinstance(uid, str) and uid else None
        self._collect(result, first, items_key)
        last, index = first, 0
        total = first.get("totalPages")
        if parallel > 1 and isinstance(total, int) and total > 1 and "nextPageIndex" in first:
            gate = asyncio.Semaphore(parallel)

            async def read(i: int) -> dict[str, Any] | None:
                async with gate:
                    try:
                        return await self._page(path, items_key, base, i)
                    except AppleApiError as exc:
                        if exc.error_number == BAD_PAGE_INDEX:
                            return None
                        raise

            pages = await asyncio.gather(*(read(i) for i in range(1, min(total, MAX_PAGES))))
            for i, page in enumerate(pages, start=1):
                if page is None:
                    return result
                self._collect(result, page, items_key)
                last, index = page, i
        for _ in range(MAX_PAGES):
            nxt = last.get("nextPageIndex")
            if nxt is None:
                return result
            if not isinstance(nxt, int) or nxt <= index:
                raise AppleApiError(f"{path}: nextPageIndex {nxt!r} does not advance past {index}")
            try:
                last = await self._page(path, items_key, base, nxt)
            except AppleApiError as exc:
                if exc.error_number == BAD_PAGE_INDEX:
                    return result
                raise
            index = nxt
            self._collect(result, last, items_key)
        raise AppleApiError(f"{path}: more than {MAX_PAGES} pages")

    async def _page(
        self, path: str, items_key: str, params: Mapping[str, str], index: int
    ) -> dict[str, Any]:
        query = {**params, "pageIndex": str(index)}
        return await self._call("GET", path, operation=f"get_{items_key}", params=query)

    @staticmethod
    def _collect(result: SyncResult, page: Mapping[str, Any], items_key: str) -> None:
        result.pages += 1
        records = page.get(items_key) or []
        if isinstance(records, list):
            result.items.extend(r for r in records if isinstance(r, dict))

    async def sync_assets(self, *, parallel: int = 1, **filters: str) -> SyncResult:
        """Every asset (no ``sinceVersionId``: Get Assets does not support it)."""
        return await self.sync("/assets", "assets", filters, parallel=parallel)

    async def sync_assignments(
        self, since_version_id: str | None = None, *, parallel: int = 1, **filters: str
    ) -> SyncResult:
        """Assignments changed since ``since_version_id`` (all when None); 9721 if it is stale."""
        return await self._sync_since("assignments", since_version_id, filters, parallel)

    async def sync_users(
        self, since_version_id: str | None = None, *, parallel: int = 1, **filters: str
    ) -> SyncResult:
        """Users changed since ``since_version_id`` (all when None); 9721 if it is stale."""
        return await self._sync_since("users", since_version_id, filters, parallel)

    async def _sync_since(
        self,
        items_key: str,
        since_version_id: str | None,
        filters: Mapping[str, str],
        parallel: int,
    ) -> SyncResult:
        """``/{items_key}`` with ``filters``, from ``sinceVersionId`` when one is given."""
        params = dict(filters)
        if since_version_id:
            params["sinceVersionId"] = since_version_id
        return await self.sync(f"/{items_key}", items_key, params, parallel=parallel)

    # -- transport --------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        await self._refresh_limits()
        return await self._request(method, path, operation=operation, params=params, json=json)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        auth: bool = True,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self._user_agent:
            headers["User-Agent"] = self._user_agent
        if auth:
            headers["Authorization"] = f"Bearer {self._s_token.get_secret_value()}"
        data = None
        if json is not None:
            data = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        attempts = self._settings.api_max_attempts
        attempt = 0
        while True:  # bounded: the last attempt re-raises
            attempt += 1
            await self._spacer.wait()
            try:
                return await self._once(method, path, operation, params, data, headers)
            except AdapterError as exc:
                if not exc.retriable or attempt >= attempts:
                    raise
                retry_after = exc.retry_after_s if isinstance(exc, VendorUnavailableError) else None
                delay = self._retry.delay(attempt, retry_after)
                log.warning(
                    "apple %s failed (attempt %d/%d), retrying in %.1fs: %s",
                    operation,
                    attempt,
                    attempts,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    async def _once(
        self,
        method: str,
        path: str,
        operation: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        url = self._base + path
        self.requests[operation] = self.requests.get(operation, 0) + 1
        try:
            async with self._http().request(
                method, url, params=params, data=data, headers=headers
            ) as resp:
                status = resp.status
                body = await resp.read()
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._count(operation, "network")
            raise VendorUnavailableError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and "errorNumber" in doc:
            self._count(operation, str(status))
            raise _error_for(operation, doc, status, retry_after)
        if status >= 500 or status == 429:
            self._count(operation, str(status))
            raise VendorUnavailableError(f"{operation}: HTTP {status}", status, retry_after)
        if status == 401:
            self._count(operation, str(status))
            raise AppleAuthError(f"{operation}: HTTP 401 (sToken missing, invalid or expired)")
        if status >= 400 or not isinstance(doc, dict):
            self._count(operation, str(status))
            raise AppleApiError(f"{operation}: HTTP {status}, unexpected body", status=status)
        return doc

    def _count(self, operation: str, status: str) -> None:
        if self._metrics is not None:
            self._metrics.vendor_api_errors.labels("apple", operation, status).inc()


def _error_for(
    operation: str, doc: Mapping[str, Any], status: int, retry_after: float | None
) -> Exception:
    number = doc.get("errorNumber")
    message = f"{operation}: Apple error {number}: {doc.get('errorMessage', '')}"
    if number in AUTH_ERRORS:
        return AppleAuthError(message, error_number=number if isinstance(number, int) else None)
    if number in RETRIABLE_ERRORS or status >= 500:
        return AppleUnavailableError(
            message,
            status,
            retry_after,
            error_number=number if isinstance(number, int) else None,
        )
    return AppleApiError(
        message, error_number=number if isinstance(number, int) else None, status=status
    )
