"""aiohttp application of the EMM simulator: Google's endpoints plus a control API.

Google side (paths as on www.googleapis.com; every API call needs a Bearer token with the
androidenterprise scope, else 401/403 in Google's JSON error format):

* ``POST /token``: OAuth jwt-bearer grant (see :mod:`simulators.android.auth`);
* ``POST /androidenterprise/v1/enterprises/pullNotificationSet?requestMode=...``:
  ``waitForNotifications`` (default) holds up to ``hold_s`` for notifications,
  ``returnImmediately`` answers at once; an empty set omits ``notificationSetId``;
* ``POST /androidenterprise/v1/enterprises/acknowledgeNotificationSet?notificationSetId=...``:
  204; unknown ids 404; late acks (after the deadline) are accepted and ignored;
* ``POST /androidenterprise/v1/enterprises/{enterpriseId}/sendTestPushNotification``.

API calls above ``rate_limit_qpm`` answer 429 ``rateLimitExceeded`` (token bucket, one second of
burst). Control API (no auth; bind it to loopback):

* ``POST /control/notifications`` ``{"notifications": [...]}`` enqueue raw notifications;
* ``POST /control/load`` ``{"count", "enterprises", "seed", "types", "rate_per_s"}`` generate load;
* ``GET /control/stats``: enqueued, delivered, acked, expired, redelivered, late acks, ...;
* ``GET /control/acked``: acknowledged sets (id, wall-clock ack time, size);
* ``POST /control/settings``: hold_s, ack_deadline_s, max_set_size, rate_limit_qpm, ack_mode
  (``normal`` | ``blackhole``: acks are held and never applied), accepted_scopes, clock_offset_s,
  token_lifetime_s, audience;
* ``POST /control/faults`` ``{"operation": "pull|ack|token|any", "status": 503|429|"network",
  "count": n}``: the next n matching calls fail;
* ``POST /control/accounts`` ``{"client_email", "public_key_pem"}``: register or rotate a key;
* ``POST /control/tokens/expire``: expire every issued access token;
* ``POST /control/expire-sets``: pass the ack deadline of every set in flight now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiohttp import web

from simulators.android.auth import AuthState
from simulators.android.control import Fault, GoogleSimulator, TokenBucket, read_control_json
from simulators.android.notifications import ALL_TYPES, generate, make_test_notification
from simulators.android.pool import AckOutcome, NotificationPool
from simulators.android.scopes import EMM_SCOPE

log = logging.getLogger(__name__)

API_PREFIX = "/androidenterprise/v1"

_STATUS_TEXT = {
    400: ("INVALID_ARGUMENT", "badRequest"),
    401: ("UNAUTHENTICATED", "authError"),
    403: ("PERMISSION_DENIED", "insufficientPermissions"),
    404: ("NOT_FOUND", "notFound"),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded"),
    500: ("INTERNAL", "backendError"),
    503: ("UNAVAILABLE", "backendError"),
}


def google_error(status: int, message: str, reason: str | None = None) -> web.Response:
    """Google's JSON error body: ``{"error": {"code", "message", "errors": [...], "status"}}``."""
    status_name, default_reason = _STATUS_TEXT.get(status, ("UNKNOWN", "unknown"))
    domain = "usageLimits" if status == 429 else "global"
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason or default_reason}],
            "status": status_name,
        }
    }
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@dataclass
class SimulatorConfig:
    hold_s: float = 30.0
    ack_deadline_s: float = 20.0
    max_set_size: int = 100
    rate_limit_qpm: float | None = 60_000.0
    ack_mode: str = "normal"  # normal | blackhole
    required_scope: str = EMM_SCOPE


class EmmSimulator(GoogleSimulator[SimulatorConfig]):
    """State and handlers of one simulated EMM API. :meth:`app` builds the aiohttp application."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        auth: AuthState | None = None,
        retention_s: float = 7 * 24 * 3600.0,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.auth = auth or AuthState()
        self.pool = NotificationPool(
            ack_deadline_s=self.config.ack_deadline_s,
            max_set_size=self.config.max_set_size,
            retention_s=retention_s,
        )
        self.faults: list[Fault] = []
        self.rate_limited = 0
        self.pull_requests = 0
        self.ack_requests = 0
        self.blackholed_acks: list[str] = []
        self._bucket: TokenBucket | None = None
        self._release_blackhole = asyncio.Event()
        self._load_tasks: set[asyncio.Task[None]] = set()
        self._message_ids = iter(range(10**11, 10**12))

    # -- wiring ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.post("/token", self.token),
                web.post(f"{API_PREFIX}/enterprises/pullNotificationSet", self.pull),
                web.post(f"{API_PREFIX}/enterprises/acknowledgeNotificationSet", self.acknowledge),
                web.post(
                    f"{API_PREFIX}/enterprises/{{enterpriseId}}/sendTestPushNotification",
                    self.send_test_push,
                ),
                web.post("/control/notifications", self.control_enqueue),
                web.post("/control/load", self.control_load),
                web.get("/control/stats", self.control_stats),
                web.get("/control/acked", self.control_acked),
                web.post("/control/settings", self.control_settings),
                web.post("/control/faults", self.control_faults),
                web.post("/control/accounts", self.control_accounts),
                web.post("/control/tokens/expire", self.control_expire_tokens),
                web.post("/control/expire-sets", self.control_expire_sets),
            ]
        )
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        """Release held acks, stop load generators and cancel deadline timers."""
        self._release_blackhole.set()
        for task in list(self._load_tasks):
            task.cancel()
        for task in list(self._load_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.pool.close()

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = asdict(self.pool.stats)
        doc.update(
            pending=self.pool.pending,
            in_flight=self.pool.in_flight,
            active_pulls=self.pool.active_pulls,
            rate_limited=self.rate_limited,
            pull_requests=self.pull_requests,
            ack_requests=self.ack_requests,
            blackholed_acks=len(self.blackholed_acks),
            tokens_issued=self.auth.tokens_issued,
            token_errors=self.auth.token_errors,
        )
        return doc

    # -- shared checks -----------------------------------------------------------------------

    async def _injected(self, request: web.Request, operation: str) -> web.StreamResponse | None:
        return self._injected_fault(request, operation, google_error)

    def _rate_limited(self) -> bool:
        qpm = self.config.rate_limit_qpm
        return self._over_rate(None if qpm is None else qpm / 60.0)

    async def _api_guard(self, request: web.Request, operation: str) -> web.StreamResponse | None:
        injected = await self._injected(request, operation)
        if injected is not None:
            return injected
        problem = self.auth.check(request.headers.get("Authorization"), self.config.required_scope)
        if problem == "401":
            return google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        if problem == "403":
            return google_error(403, "Request had insufficient authentication scopes.")
        if self._rate_limited():
            return google_error(
                429,
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'.",
            )
        return None

    # -- Google endpoints --------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        injected = await self._injected(request, "token")
        if injected is not None:
            return injected
        return await self._issue_token(request, log, "sim token request refused: %s")

    async def pull(self, request: web.Request) -> web.StreamResponse:
        self.pull_requests += 1
        guard = await self._api_guard(request, "pull")
        if guard is not None:
            return guard
        mode = request.query.get("requestMode", "waitForNotifications")
        if mode not in ("waitForNotifications", "returnImmediately"):
            return google_error(400, f"Invalid value for requestMode: {mode}", "invalidParameter")
        self.pool.ack_deadline_s = self.config.ack_deadline_s
        self.pool.max_set_size = self.config.max_set_size
        set_id, notifications = await self.pool.pull(
            wait=mode == "waitForNotifications", hold_s=self.config.hold_s
        )
        body: dict[str, Any] = {"kind": "androidenterprise#notificationSet"}
        if set_id is not None:
            body["notificationSetId"] = set_id
            body["notification"] = notifications
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def acknowledge(self, request: web.Request) -> web.StreamResponse:
        self.ack_requests += 1
        guard = await self._api_guard(request, "ack")
        if guard is not None:
            return guard
        set_id = request.query.get("notificationSetId")
        if not set_id:
            return google_error(400, "Required parameter: notificationSetId", "required")
        if self.config.ack_mode == "blackhole":
            # The ack never reaches "Google": held until released, then refused, never applied.
            self.blackholed_acks.append(set_id)
            await self._release_blackhole.wait()
            return google_error(503, "The service is currently unavailable.")
        outcome = self.pool.ack(set_id)
        if outcome is AckOutcome.UNKNOWN:
            return google_error(404, "No notification set with this id.", "notFound")
        return web.Response(status=204)

    async def send_test_push(self, request: web.Request) -> web.StreamResponse:
        guard = await self._api_guard(request, "test_push")
        if guard is not None:
            return guard
        enterprise_id = request.match_info["enterpriseId"]
        self.pool.enqueue([make_test_notification(enterprise_id)])
        return web.json_response(
            {
                "messageId": str(next(self._message_ids)),
                "topicName": f"projects/sim-project/topics/play-work-{enterprise_id}",
            }
        )

    # -- control API -------------------------------------------------------------------------

    async def _json(self, request: web.Request) -> dict[str, Any]:
        return await read_control_json(request)

    async def control_enqueue(self, request: web.Request) -> web.StreamResponse:
        doc = await self._json(request)
        notifications = doc.get("notifications")
        if not isinstance(notifications, list):
            raise web.HTTPBadRequest(text="'notifications' must be a list")
        return web.json_response({"enqueued": self.pool.enqueue(notifications)})

    async def control_load(self, request: web.Request) -> web.StreamResponse:
        doc = await self._json(request)
        count = int(doc.get("count", 100))
        types = tuple(doc.get("types") or ALL_TYPES)
        enterprises = int(doc.get("enterprises", 3))
        seed = doc.get("seed")
        first_seq = self.pool.stats.enqueued
        notifications = generate(
            count, enterprises=enterprises, types=types, seed=seed, first_seq=first_seq
        )
        rate = doc.get("rate_per_s")
        if rate is None:
            return web.json_response({"enqueued": self.pool.enqueue(notifications)})
        task = asyncio.create_task(self._trickle(notifications, float(rate)))
        self._load_tasks.add(task)
        task.add_done_callback(self._load_tasks.discard)
        return web.json_response({"scheduled": count, "rate_per_s": float(rate)})

    async def _trickle(self, notifications: list[dict[str, Any]], rate: float) -> None:
        step = 0.1
        per_step = max(1, round(rate * step))
        for start in range(0, len(notifications), per_step):
            self.pool.enqueue(notifications[start : start + per_step])
            await asyncio.sleep(step)

    async def control_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def control_acked(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            [
                {"set_id": r.set_id, "acked_at": r.acked_at_wall, "size": len(r.notifications)}
                for r in self.pool.acked
            ]
        )

    async def control_settings(self, request: web.Request) -> web.StreamResponse:
        doc = await self._json(request)
        c = self.config
        try:
            if "hold_s" in doc:
                c.hold_s = float(doc["hold_s"])
            if "ack_deadline_s" in doc:
                c.ack_deadline_s = float(doc["ack_deadline_s"])
            if "max_set_size" in doc:
                c.max_set_size = max(1, int(doc["max_set_size"]))
            if "rate_limit_qpm" in doc:
                value = doc["rate_limit_qpm"]
                c.rate_limit_qpm = None if value is None else float(value)
            if "ack_mode" in doc:
                self.set_ack_mode(str(doc["ack_mode"]))
            if "required_scope" in doc:
                c.required_scope = str(doc["required_scope"])
            if "accepted_scopes" in doc:
                self.auth.accepted_scopes = {str(s) for s in doc["accepted_scopes"]}
            if "clock_offset_s" in doc:
                self.auth.clock_offset_s = float(doc["clock_offset_s"])
            if "token_lifetime_s" in doc:
                self.auth.token_lifetime_s = int(doc["token_lifetime_s"])
            if "audience" in doc:
                self.auth.audience = doc["audience"]
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"bad setting: {exc}") from None
        return web.json_response(asdict(c))

    async def control_expire_sets(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"expired": self.pool.expire_all_now()})
