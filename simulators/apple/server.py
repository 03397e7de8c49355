"""The simulated Apps and Books Management API v2 (``/mdm/v2/...``) plus its control API.

Faithful to VENDOR_NOTES.md section 1 where it is documented: sToken bearer auth (base64 JSON,
expiry, revocation; 9722/9601/9621/9625), request limits from the service config
(9700-9705, 9714/9715) and ``maxRequestPerSecond`` (9646 with HTTP 503 + ``Retry-After``),
pagination (``pageIndex``/``nextPageIndex``/``versionId``/``sinceVersionId``; 9650, 9721),
async events (``eventId``, ``GET /status?eventId=``, PENDING -> COMPLETE|FAILED with
numCompleted/numRequested/failures; 9708), and notifications: ``POST /client/config`` delivers a
TEST_NOTIFICATION synchronously and refuses the config with 9728 when it is not answered 2xx.
``error_status_200`` answers every error with HTTP 200, as Apple has been seen to do.
Deviations (for local use): plain http notification URLs are accepted unless ``require_https``.

The control API (``/_sim/...``) is documented in docs/apple.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from broker.httpserve import start_site
from broker.lifecycle import AsyncService, Lifecycle
from simulators.apple.delivery import Deliverer, DeliveryRecord, Faults
from simulators.apple.errors import ERROR_MESSAGES, error_body
from simulators.apple.stoken import STokenError, token_of
from simulators.apple.world import (
    DEFAULT_LIMITS,
    NOTIFICATION_TYPES,
    SUBSCRIBABLE_TYPES,
    AsyncEvent,
    Location,
    new_location,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API = "/mdm/v2"
SENT_KEPT = 10_000
"""Notifications kept by id for ``POST /_sim/notifications/{id}/reuse``."""


@dataclass
class SimConfig:
    page_size: int = 1000
    processing_delay_s: float = 0.0
    error_status_200: bool = False
    require_https: bool = False
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))


@dataclass(frozen=True)
class ApiCall:
    """One authenticated API request as the simulator saw it."""

    uid: str
    user_agent: str
    path: str
    at: float


class ApiError(Exception):
    """Answered as an Apple ErrorResponse."""

    def __init__(self, number: int, status: int = 400, **extra: Any) -> None:
        super().__init__(ERROR_MESSAGES[number])
        self.number = number
        self.status = status
        self.extra = extra


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


class AppleSimulator(AsyncService):
    """In-process Apple served on ``host:port`` (``port=0``: a free one); one default location
    exists. ``async with`` or ``start()`` / ``stop()`` (the one lifecycle, no restart)."""

    def __init__(
        self,
        config: SimConfig | None = None,
        faults: Faults | None = None,
        *,
        seed: int | None = None,
        default_uid: str = "2049025000431439",
        notify_ssl: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``notify_ssl`` verifies the broker's https notification URL (default: system CAs)."""
        self.config = config or SimConfig()
        self.faults = faults or Faults()
        self.deliverer = Deliverer(self.faults, seed=seed, ssl_context=notify_ssl)
        self.sent: dict[str, dict[str, Any]] = {}
        self.locations: dict[str, Location] = {}
        self.default = self.add_location(uid=default_uid)
        self._requests: dict[str, deque[float]] = {}
        self.api_calls: deque[ApiCall] = deque(maxlen=200_000)
        """Authenticated API requests, oldest first (bounded), for tests of the client side."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.host = host
        self._port = port
        self.lifecycle = Lifecycle("AppleSimulator")

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API

    async def start(self) -> None:
        await self.lifecycle.start(self._start, undo=self._halt)

    async def stop(self) -> None:
        await self.lifecycle.stop(self._halt)

    async def _start(self) -> None:
        from simulators.apple.control import control_routes

        app = web.Application(middlewares=[self._errors])
        app.add_routes(self._api_routes())
        app.add_routes(control_routes(self))
        app.router.add_route("*", API + "/{tail:.*}", self._unsupported)
        self._runner, _, self.port = await start_site(app, self.host, self._port)
        await self.deliverer.start()
        log.info(
            "apple simulator on %s (sToken of %s: see control API)", self.api_url, self.default.uid
        )

    async def _halt(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.deliverer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add_location(
        self, uid: str | None = None, org_name: str = "Simulated Org", expires_in_days: float = 365
    ) -> Location:
        location = new_location(uid, org_name, timedelta(days=expires_in_days))
        self.locations[location.token] = location
        return location

    def location_by_uid(self, uid: str) -> Location | None:
        return next((loc for loc in self.locations.values() if loc.uid == uid), None)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no async event is processing and no notification is pending delivery."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=remaining)
                continue
            if not await self.deliverer.wait_idle(remaining):
                return False
            if not self._tasks:
                return True
        return False

    def spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- notifications ----------------------------------------------------------------------

    def notify(self, location: Location, payload: dict[str, Any], force: bool = False) -> bool:
        """Queue a notification if the location subscribed to its type (or ``force``)."""
        config = location.client_config
        url, token = config.get("notificationUrl"), config.get("notificationAuthToken")
        if not url or not token:
            return False
        if not force and payload["notificationType"] not in config.get("notificationTypes", []):
            return False
        self.deliverer.enqueue(url, token, payload)
        self.sent[str(payload.get("notificationId"))] = payload
        while len(self.sent) > SENT_KEPT:
            self.sent.pop(next(iter(self.sent)))
        return True

    # -- middleware and auth ----------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            status = 200 if self.config.error_status_200 else exc.status
            headers = {"Retry-After": "1"} if exc.number == 9646 and status >= 500 else None
            return _json(error_body(exc.number, **exc.extra), status, headers)

    def _auth(self, request: web.Request) -> Location:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme != "Bearer" or not credentials:
            raise ApiError(9722, 401)
        try:
            token = token_of(credentials)
        except STokenError:
            raise ApiError(9601, 401) from None
        location = self.locations.get(token)
        if location is None:
            raise ApiError(9601, 401)
        if location.revoked:
            raise ApiError(9625, 401)
        if location.exp_date <= datetime.now(UTC):
            raise ApiError(9621, 401)
        self.api_calls.append(
            ApiCall(location.uid, request.headers.get("User-Agent", ""), request.path, time.time())
        )
        window = self._requests.setdefault(location.token, deque())
        now = time.monotonic()
        while window and now - window[0] > 1.0:
            window.popleft()
        if len(window) >= self.config.limits["maxRequestPerSecond"]:
            raise ApiError(9646, 503)
        window.append(now)
        return location

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise ApiError(9727, 415)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ApiError(9602) from None
        if not isinstance(body, dict):
            raise ApiError(9602)
        return body

    async def _unsupported(self, request: web.Request) -> web.Response:
        raise ApiError(9726, 405)

    # -- routes -----------------------------------------------------------------------------

    def _api_routes(self) -> list[web.RouteDef]:
        return [
            web.get(API + "/service/config", self.service_config),
            web.get(API + "/client/config", self.get_client_config),
            web.post(API + "/client/config", self.post_client_config),
            web.get(API + "/assets", self.get_assets),
            web.get(API + "/assignments", self.get_assignments),
            web.get(API + "/users", self.get_users),
            web.post(API + "/assets/associate", self.associate),
            web.post(API + "/assets/disassociate", self.disassociate),
            web.post(API + "/assets/revoke", self.revoke),
            web.post(API + "/users/create", self.users_create),
            web.post(API + "/users/update", self.users_update),
            web.post(API + "/users/retire", self.users_retire),
            web.get(API + "/status", self.status),
        ]

    async def service_config(self, request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}{API}"
        urls = {
            "clientConfig": f"{base}/client/config",
            "getAssets": f"{base}/assets",
            "getAssignments": f"{base}/assignments",
            "getUsers": f"{base}/users",
            "associateAssets": f"{base}/assets/associate",
            "disassociateAssets": f"{base}/assets/disassociate",
            "revokeAssets": f"{base}/assets/revoke",
            "createUsers": f"{base}/users/create",
            "updateUsers": f"{base}/users/update",
            "retireUsers": f"{base}/users/retire",
            "eventStatus": f"{base}/status",
            "contentMetadataLookup": "https://uclient-api.itunes.apple.com/WebObjects/MZStorePlatform.woa/wa/lookup",
            "invitationEmail": "https://vpp.itunes.apple.com/mdm/v2/invitation",
        }
        return _json(
            {
                "errorCodes": [
                    {"errorNumber": n, "errorMessage": m} for n, m in sorted(ERROR_MESSAGES.items())
                ],
                "limits": self.config.limits,
                "notificationTypes": list(NOTIFICATION_TYPES),
                "urls": urls,
            }
        )

    def _client_config(self, location: Location) -> dict[str, Any]:
        config = location.client_config
        doc = {
            "countryISO2ACode": "US",
            "defaultPlatform": "volumestore",
            "locationName": location.org_name,
            "subscribedNotificationTypes": config.get("notificationTypes", []),
            "websiteURL": "https://business.apple.com",
            **location.common(),
        }
        for key in ("notificationUrl", "notificationAuthToken"):
            if key in config:
                doc[key] = config[key]
        return doc

    async def get_client_config(self, request: web.Request) -> web.Response:
        return _json(self._client_config(self._auth(request)))

    async def post_client_config(self, request: web.Request) -> web.Response:
        location = self._auth(request)
        body = await self._body(request)
        limits = self.config.limits
        types = body.get("notificationTypes")
        if types is not None and (
            not isinstance(types, list) or any(t not in SUBSCRIBABLE_TYPES for t in types)
        ):
            raise ApiError(9602)
        url, token = body.get("notificationUrl"), body.get("notificationAuthToken")
        if (url is None) != (token is None):
            raise ApiError(9710)
        if url is not None:
            if not isinstance(url, str) or not isinstance(token, str) or not token:
                raise ApiError(9602)
            if max(len(url), len(token)) > limits["maxNotificationLength"]:
                raise ApiError(9711)
            parts = urlsplit(url)
            allowed = ("https",) if self.config.require_https else ("https", "http")
            if parts.scheme not in allowed or not parts.hostname:
                raise ApiError(9712)
        mdm_info = body.get("mdmInfo")
        if mdm_info is not None:
            if not isinstance(mdm_info, dict) or not all(
                isinstance(mdm_info.get(k), str) and mdm_info.get(k)
                for k in ("id", "name", "metadata")
            ):
                raise ApiError(9723)
            if len(mdm_info["id"]) > limits["maxMdmIdLength"]:
                raise ApiError(9724)
            if len(mdm_info["name"]) > limits["maxMdmNameLength"]:
                raise ApiError(9725)
            if len(mdm_info["metadata"]) > limits["maxMdmMetadataLength"]:
                raise ApiError(9713)
        if isinstance(url, str) and isinstance(token, str):
            test = location.notification("TEST_NOTIFICATION", {})
            record = self.deliverer.records.setdefault(test["notificationId"], _test_record(test))
            result = await self.deliverer.post(url, token, test)
            record.attempts.append(result)
            record.outcome = (
                "delivered" if result.isdigit() and 200 <= int(result) < 300 else "dropped"
            )
            self.deliverer.order.append(record.notification_id)
            if record.outcome != "delivered":
                raise ApiError(9728)
            location.client_config["notificationUrl"] = url
            location.client_config["notificationAuthToken"] = token
        if types is not None:
            location.client_config["notificationTypes"] = list(types)
        if mdm_info is not None:
            location.client_config["mdmInfo"] = mdm_info
        return _json(self._client_config(location))

    # -- paginated reads --------------------------------------------------------------------

    def _page(
        self, request: web.Request, location: Location, key: str, records: list[dict[str, Any]]
    ) -> web.Response:
        try:
            index = int(request.query.get("pageIndex", "0"))
        except ValueError:
            raise ApiError(9602) from None
        size = self.config.page_size
        total_pages = (len(records) + size - 1) // size
        if index < 0 or (index > 0 and index >= total_pages):
            raise ApiError(9650)
        page = records[index * size : (index + 1) * size]
        doc: dict[str, Any] = {
            key: page,
            "currentPageIndex": index,
            "size": len(page),
            "totalPages": total_pages,
            "versionId": location.version_id(),
            **location.common(),
        }
        if index + 1 < total_pages:
            doc["nextPageIndex"] = index + 1
        return _json(doc)

    def _since(self, request: web.Request, location: Location) -> int:
        since = request.query.get("sinceVersionId")
        if since is None:
            return 0
        if since not in location.version_ids:
            raise ApiError(9721)
        return location.version_ids[since]

    async def get_assets(self, request: web.Request) -> web.Response:
        location = self._auth(request)
        q = request.query
        records = [
            a.wire()
            for a in location.assets.values()
            if q.get("adamId", a.adam_id) == a.adam_id
            and q.get("pricingParam", a.pricing_param) == a.pricing_param
            and q.get("productType", a.product_type) == a.product_type
        ]
        return self._page(request, location, "assets", records)

    async def get_assignments(self, request: web.Request) -> web.Response:
        location = self._auth(request)
        since = self._since(request, location)
        q = request.query
        records = []
        for (adam_id, pricing, kind, target), version in location.assignments.items():
            if version <= since or q.get("adamId", adam_id) != adam_id:
                continue
            if "serialNumber" in q and (kind, target) != ("serialNumber", q["serialNumber"]):
                continue
            if "clientUserId" in q and (kind, target) != ("clientUserId", q["clientUserId"]):
                continue
            records.append({"adamId": adam_id, "pricingParam": pricing, kind: target})
        return self._page(request, location, "assignments", records)

    async def get_users(self, request: web.Request) -> web.Response:
        location = self._auth(request)
        since = self._since(request, location)
        q = request.query
        active_only = q.get("activeOnly") == "true" or q.get("includeRetired") == "0"
        retired_only = q.get("retiredOnly") == "true"
        records = [
            u.wire()
            for u in location.users.values()
            if u.version > since
            and q.get("clientUserId", u.client_user_id) == u.client_user_id
            and not (active_only and u.status == "Retired")
            and not (retired_only and u.status != "Retired")
        ]
        return self._page(request, location, "users", records)

    # -- async mutations --------------------------------------------------------------------

    def _event_response(self, location: Location, event: AsyncEvent) -> web.Response:
        return _json({"eventId": event.event_id, **location.common()})

    def finish_later(self, location: Location, work: Callable[[], list[dict[str, Any]]]) -> None:
        async def run() -> None:
            if self.config.processing_delay_s > 0:
                await asyncio.sleep(self.config.processing_delay_s)
            for payload in work():
                self.notify(location, payload)

        self.spawn(run())

    @staticmethod
    def _strings(body: dict[str, Any], key: str) -> list[str]:
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ApiError(9602)
        return value

    async def _manage(self, request: web.Request, kind: str) -> web.Response:
        location = self._auth(request)
        body = await self._body(request)
        limits = self.config.limits
        raw_assets = body.get("assets")
        if not isinstance(raw_assets, list) or not raw_assets:
            raise ApiError(9718)
        assets: list[tuple[str, str]] = []
        for a in raw_assets:
            if not isinstance(a, dict) or not isinstance(a.get("adamId"), str):
                raise ApiError(9602)
            assets.append((a["adamId"], str(a.get("pricingParam", "STDQ"))))
        serials, users = self._strings(body, "serialNumbers"), self._strings(body, "clientUserIds")
        if not serials and not users:
            raise ApiError(9719)
        if len(assets) > limits["maxAssets"]:
            raise ApiError(9700)
        if len(users) > limits["maxClientUserIds"]:
            raise ApiError(9701)
        if len(serials) > limits["maxSerialNumbers"]:
            raise ApiError(9702)
        for values, number in ((assets, 9703), (users, 9704), (serials, 9705)):
            if len(set(values)) != len(values):
                raise ApiError(number)
        for key in assets:
            asset = location.assets.get(key)
            if asset is None:
                raise ApiError(
                    9602, errorInfo={"assets": [{"adamId": key[0], "pricingParam": key[1]}]}
                )
            if serials and not asset.device_assignable:
                raise ApiError(9707)
        event = location.new_event(kind, len(assets) * (len(serials) + len(users)))
        self.finish_later(location, lambda: location.process_manage(event, assets, serials, users))
        return self._event_response(location, event)

    async def associate(self, request: web.Request) -> web.Response:
        return await self._manage(request, "ASSOCIATE")

    async def disassociate(self, request: web.Request) -> web.Response:
        return await self._manage(request, "DISASSOCIATE")

    async def revoke(self, request: web.Request) -> web.Response:
        location = self._auth(request)
        body = await self._body(request)
        serials, users = self._strings(body, "serialNumbers"), self._strings(body, "clientUserIds")
        if not serials and not users:
            raise ApiError(9719)
        if len(users) > self.config.limits["maxRevokeClientUserIds"]:
            raise ApiError(9701)
        if len(serials) > self.config.limits["maxRevokeSerialNumbers"]:
            raise ApiError(9702)
        event = location.new_event("REVOKE", 0)
        self.finish_later(location, lambda: location.process_revoke(event, serials, users))
        return self._event_response(location, event)

    async def _users(self, request: web.Request, kind: str) -> web.Response:
        location = self._auth(request)
        body = await self._body(request)
        users = body.get("users")
        if not isinstance(users, list) or not users:
            raise ApiError(9720)
        if len(users) > self.config.limits["maxUsers"]:
            raise ApiError(9714)
        ids = []
        for user in users:
            if not isinstance(user, dict) or not isinstance(user.get("clientUserId"), str):
                raise ApiError(9602)
            email = user.get("email")
            if email is not None and (not isinstance(email, str) or "@" not in email):
                raise ApiError(9717)
            ids.append(user["clientUserId"])
        if len(set(ids)) != len(ids):
            raise ApiError(9715)
        event = location.new_event(kind, len(users))
        self.finish_later(location, lambda: location.process_users(event, users))
        return self._event_response(location, event)

    async def users_create(self, request: web.Request) -> web.Response:
        return await self._users(request, "CREATE")

    async def users_update(self, request: web.Request) -> web.Response:
        return await self._users(request, "UPDATE")

    async def users_retire(self, request: web.Request) -> web.Response:
        return await self._users(request, "RETIRE")

    async def status(self, request: web.Request) -> web.Response:
        location = self._auth(request)
        event_id = request.query.get("eventId")
        if not event_id:
            raise ApiError(9602)
        event = location.events.get(event_id)
        if event is None:
            raise ApiError(9708)
        doc: dict[str, Any] = {
            "eventStatus": event.status,
            "eventType": event.event_type,
            "numCompleted": event.num_completed,
            "numRequested": event.num_requested,
            **location.common(),
        }
        if event.failures:
            doc["failures"] = event.failures
        return _json(doc)


def _test_record(payload: dict[str, Any]) -> DeliveryRecord:
    return DeliveryRecord(payload["notificationId"], payload["notificationType"], None)
