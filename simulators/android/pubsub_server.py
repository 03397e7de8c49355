"""aiohttp application of the Pub/Sub + AMAPI simulator: Google's endpoints plus a control API.

Google side (paths as on pubsub.googleapis.com; API calls need a Bearer token with the pubsub
scope, else 401/403 in Google's JSON error format):

* ``POST /token``: OAuth jwt-bearer grant (the same checks as the EMM simulator's);
* ``PUT /v1/projects/{p}/topics/{t}``, ``PUT /v1/projects/{p}/subscriptions/{s}`` (``topic``,
  ``ackDeadlineSeconds``), ``GET`` of either;
* ``POST /v1/projects/{p}/topics/{t}:publish`` ``{"messages": [{"data", "attributes"}]}``;
* ``POST /v1/projects/{p}/subscriptions/{s}:pull`` ``{"maxMessages"}``: holds up to ``hold_s``
  while nothing is pending, then answers ``{}``;
* ``POST ...:acknowledge`` ``{"ackIds"}`` and ``POST ...:modifyAckDeadline``
  ``{"ackIds", "ackDeadlineSeconds"}``: ``{}``.

API calls above ``rate_limit_qps`` answer 429 ``RESOURCE_EXHAUSTED``. Control API (no auth; bind
it to loopback): ``POST /control/amapi/{enroll,status-report,command,usage-logs,upgrade}``
publish AMAPI notifications, ``POST /control/load`` a mix of every type, ``POST /control/publish``
raw messages (e.g. undecodable data); ``GET /control/stats``, ``/control/acked``,
``/control/redelivered``, ``/control/expired``; ``POST /control/settings``,
``/control/faults``, ``/control/accounts``, ``/control/tokens/expire``, ``/control/expire-leases``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiohttp import web

from simulators.android import amapi_resources as res
from simulators.android.auth import AuthState
from simulators.android.control import Fault, GoogleSimulator, TokenBucket
from simulators.android.pubsub_state import PubsubError, PubsubState

log = logging.getLogger(__name__)

PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def pubsub_error(status: int, message: str) -> web.Response:
    """Google's JSON error body as Pub/Sub sends it: ``{"error": {"code", "message", "status"}}``."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@dataclass
class PubsubSimConfig:
    project: str = "sim-project"
    topic: str = "amapi-notifications"
    subscription: str = "amapi-broker"
    ack_deadline_s: float = 10
    retention_s: float = 7 * 24 * 3600.0
    hold_s: float = 20.0
    max_messages_cap: int = 1000
    rate_limit_qps: float | None = 200.0
    sweep_interval_s: float = 0.05
    ack_mode: str = "normal"  # normal | blackhole (acks held, then refused: never applied)

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"


class PubsubSimulator(GoogleSimulator[PubsubSimConfig]):
    """State and handlers of one simulated Pub/Sub project fed by a simulated AMAPI."""

    def __init__(
        self, config: PubsubSimConfig | None = None, auth: AuthState | None = None
    ) -> None:
        self.config = config or PubsubSimConfig()
        self.auth = auth or AuthState()
        self.auth.accepted_scopes = {PUBSUB_SCOPE, CLOUD_PLATFORM_SCOPE}
        self.state = PubsubState()
        c = self.config
        self.state.create_topic(c.topic_path)
        self.state.create_subscription(
            c.subscription_path, c.topic_path, c.ack_deadline_s, c.retention_s, strict=False
        )
        self.faults: list[Fault] = []
        self.rate_limited = 0
        self._bucket: TokenBucket | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._operation_ids = itertools.count(1)
        self.blackholed_acks = 0
        self._release_blackhole = asyncio.Event()

    # -- wiring ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.post("/token", self.token),
                web.put("/v1/projects/{project}/topics/{name}", self.create_topic),
                web.get("/v1/projects/{project}/topics/{name}", self.get_topic),
                web.post("/v1/projects/{project}/topics/{name}", self.topic_method),
                web.put("/v1/projects/{project}/subscriptions/{name}", self.create_subscription),
                web.get("/v1/projects/{project}/subscriptions/{name}", self.get_subscription),
                web.post("/v1/projects/{project}/subscriptions/{name}", self.subscription_method),
                web.post("/control/amapi/enroll", self.control_enroll),
                web.post("/control/amapi/status-report", self.control_status_report),
                web.post("/control/amapi/command", self.control_command),
                web.post("/control/amapi/usage-logs", self.control_usage_logs),
                web.post("/control/amapi/upgrade", self.control_upgrade),
                web.post("/control/load", self.control_load),
                web.post("/control/publish", self.control_publish),
                web.get("/control/stats", self.control_stats),
                web.get("/control/acked", self.control_acked),
                web.get("/control/redelivered", self.control_redelivered),
                web.get("/control/expired", self.control_expired),
                web.post("/control/settings", self.control_settings),
                web.post("/control/faults", self.control_faults),
                web.post("/control/accounts", self.control_accounts),
                web.post("/control/tokens/expire", self.control_expire_tokens),
                web.post("/control/expire-leases", self.control_expire_leases),
            ]
        )
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    def start(self) -> None:
        """Start the deadline sweeper (fires ack deadlines and retention). Idempotent."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="pubsub-sim-sweeper")

    async def close(self) -> None:
        self._release_blackhole.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_loop(self) -> None:
        while True:
            try:
                self.state.sweep()
            except Exception:  # a simulator bug must not stop redelivery: log and go on
                log.exception("pubsub sim: sweep failed")
            await asyncio.sleep(self.config.sweep_interval_s)

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = asdict(self.state.stats)
        sub = self.config.subscription_path
        doc.update(
            pending=self.state.pending_count(sub),
            outstanding=self.state.outstanding_count(sub),
            active_pulls=self.state.active_pulls,
            rate_limited=self.rate_limited,
            tokens_issued=self.auth.tokens_issued,
            token_errors=self.auth.token_errors,
        )
        return doc

    # -- shared checks -----------------------------------------------------------------------

    def _injected(self, request: web.Request, operation: str) -> web.StreamResponse | None:
        return self._injected_fault(request, operation, pubsub_error)

    def _rate_limited(self) -> bool:
        return self._over_rate(self.config.rate_limit_qps)

    def _api_guard(self, request: web.Request, operation: str) -> web.StreamResponse | None:
        injected = self._injected(request, operation)
        if injected is not None:
            return injected
        authorization = request.headers.get("Authorization")
        problem = self.auth.check(authorization, PUBSUB_SCOPE)
        if problem == "403" and self.auth.check(authorization, CLOUD_PLATFORM_SCOPE) is None:
            problem = None
        if problem == "401":
            return pubsub_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        if problem == "403":
            return pubsub_error(403, "Request had insufficient authentication scopes.")
        if self._rate_limited():
            return pubsub_error(429, "Too many requests: quota exceeded for this subscription.")
        return None

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            doc = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            raise PubsubError(400, "Invalid JSON payload received.") from None
        if not isinstance(doc, dict):
            raise PubsubError(400, "Invalid JSON payload received: not an object.")
        return doc

    @staticmethod
    def _path(request: web.Request, kind: str) -> tuple[str, str]:
        """``(projects/{p}/{kind}/{name}, method)`` from ``{name}:{method}``."""
        name, _, method = request.match_info["name"].partition(":")
        return f"projects/{request.match_info['project']}/{kind}/{name}", method

    # -- Google endpoints --------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        injected = self._injected(request, "token")
        if injected is not None:
            return injected
        return await self._issue_token(request, log, "pubsub sim token request refused: %s")

    async def create_topic(self, request: web.Request) -> web.StreamResponse:
        guard = self._api_guard(request, "admin")
        if guard is not None:
            return guard
        topic, _ = self._path(request, "topics")
        if topic in self.state.topics:
            return pubsub_error(409, "Resource already exists in the project (resource=topic).")
        self.state.create_topic(topic)
        return web.json_response({"name": topic})

    async def get_topic(self, request: web.Request) -> web.StreamResponse:
        guard = self._api_guard(request, "admin")
        if guard is not None:
            return guard
        topic, _ = self._path(request, "topics")
        if topic not in self.state.topics:
            return pubsub_error(404, "Resource not found (resource=topic).")
        return web.json_response({"name": topic})

    async def topic_method(self, request: web.Request) -> web.StreamResponse:
        guard = self._api_guard(request, "publish")
        if guard is not None:
            return guard
        topic, method = self._path(request, "topics")
        if method != "publish":
            return pubsub_error(404, f"Method not found: {method}")
        try:
            doc = await self._body(request)
            messages = doc.get("messages")
            if not isinstance(messages, list) or not messages:
                raise PubsubError(400, "The request contains no messages.")
            ids = self.state.publish(topic, [m for m in messages if isinstance(m, dict)])
        except PubsubError as exc:
            return pubsub_error(exc.status, exc.message)
        return web.json_response({"messageIds": ids})

    async def create_subscription(self, request: web.Request) -> web.StreamResponse:
        guard = self._api_guard(request, "admin")
        if guard is not None:
            return guard
        name, _ = self._path(request, "subscriptions")
        try:
            doc = await self._body(request)
            deadline = doc.get("ackDeadlineSeconds", 10)
            sub = self.state.create_subscription(
                name, str(doc.get("topic", "")), int(deadline) if deadline else 10
            )
        except PubsubError as exc:
            return pubsub_error(exc.status, exc.message)
        return web.json_response(sub.resource())

    async def get_subscription(self, request: web.Request) -> web.StreamResponse:
        guard = self._api_guard(request, "admin")
        if guard is not None:
            return guard
        name, _ = self._path(request, "subscriptions")
        try:
            return web.json_response(self.state.subscription(name).resource())
        except PubsubError as exc:
            return pubsub_error(exc.status, exc.message)

    async def subscription_method(self, request: web.Request) -> web.StreamResponse:
        name, method = self._path(request, "subscriptions")
        operation = {"pull": "pull", "acknowledge": "ack", "modifyAckDeadline": "modack"}.get(
            method
        )
        if operation is None:
            return pubsub_error(404, f"Method not found: {method}")
        guard = self._api_guard(request, operation)
        if guard is not None:
            return guard
        try:
            doc = await self._body(request)
            if operation == "pull":
                return await self._pull(name, doc)
            if operation == "ack" and self.config.ack_mode == "blackhole":
                self.blackholed_acks += 1
                await self._release_blackhole.wait()
                return pubsub_error(503, "The service was unable to fulfill your request.")
            if operation == "ack":
                self.state.acknowledge(name, doc.get("ackIds"))
            else:
                self.state.modify_ack_deadline(
                    name, doc.get("ackIds"), doc.get("ackDeadlineSeconds")
                )
        except PubsubError as exc:
            return pubsub_error(exc.status, exc.message)
        return web.json_response({})

    async def _pull(self, name: str, doc: dict[str, Any]) -> web.StreamResponse:
        max_messages = doc.get("maxMessages")
        if not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1:
            raise PubsubError(400, "A required argument is missing or invalid: max_messages.")
        self.state.subscription(name)  # 404 before holding
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.config.hold_s
        self.state.active_pulls += 1
        try:
            while True:
                changed = self.state.changed()
                received = self.state.take(name, max_messages, self.config.max_messages_cap)
                remaining = give_up - loop.time()
                if received or doc.get("returnImmediately") is True or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        finally:
            self.state.active_pulls -= 1
        if not received:
            return web.json_response({})
        return web.Response(
            body=orjson.dumps({"receivedMessages": received}), content_type="application/json"
        )

    # -- control: AMAPI ----------------------------------------------------------------------

    async def _control_json(self, request: web.Request) -> dict[str, Any]:
        try:
            return await self._body(request)
        except PubsubError as exc:
            raise web.HTTPBadRequest(text=exc.message) from None

    def publish_notification(self, notification_type: str, resource: Any) -> str:
        """Publish an AMAPI notification to the configured topic; returns its messageId."""
        return self.state.publish_json(
            self.config.topic_path, resource, {"notificationType": notification_type}
        )

    @staticmethod
    def _ids(doc: dict[str, Any]) -> tuple[str, str]:
        enterprise, device = (
            doc.get("enterprise", "LC00000001"),
            doc.get("device", "3a6f1c2e9b7d4e01"),
        )
        if not isinstance(enterprise, str) or not isinstance(device, str):
            raise web.HTTPBadRequest(text="enterprise and device must be strings")
        return enterprise, device

    async def control_enroll(self, request: web.Request) -> web.StreamResponse:
        enterprise, device = self._ids(await self._control_json(request))
        message_id = self.publish_notification(res.ENROLLMENT, res.device(enterprise, device))
        return web.json_response(
            {"messageId": message_id, "device": f"enterprises/{enterprise}/devices/{device}"}
        )

    async def control_status_report(self, request: web.Request) -> web.StreamResponse:
        doc = await self._control_json(request)
        enterprise, device = self._ids(doc)
        resource = res.device(enterprise, device, state=str(doc.get("state", "ACTIVE")))
        return web.json_response(
            {"messageId": self.publish_notification(res.STATUS_REPORT, resource)}
        )

    async def control_command(self, request: web.Request) -> web.StreamResponse:
        doc = await self._control_json(request)
        enterprise, device = self._ids(doc)
        error = doc.get("error")
        resource = res.operation(
            enterprise,
            device,
            str(doc.get("operation", next(self._operation_ids))),
            command_type=str(doc.get("type", "LOCK")),
            error=error if isinstance(error, dict) else None,
            done=bool(doc.get("done", True)),
        )
        return web.json_response({"messageId": self.publish_notification(res.COMMAND, resource)})

    async def control_usage_logs(self, request: web.Request) -> web.StreamResponse:
        doc = await self._control_json(request)
        enterprise, device = self._ids(doc)
        resource = res.usage_logs(enterprise, device, max(0, int(doc.get("count", 3))))
        return web.json_response({"messageId": self.publish_notification(res.USAGE_LOGS, resource)})

    async def control_upgrade(self, request: web.Request) -> web.StreamResponse:
        doc = await self._control_json(request)
        enterprise, _ = self._ids(doc)
        resource = res.enterprise_upgrade(
            enterprise, str(doc.get("state", "UPGRADE_STATE_SUCCEEDED"))
        )
        return web.json_response(
            {"messageId": self.publish_notification(res.ENTERPRISE_UPGRADE, resource)}
        )

    async def control_load(self, request: web.Request) -> web.StreamResponse:
        doc = await self._control_json(request)
        try:
            count = int(doc.get("count", 100))
            types = tuple(str(t) for t in doc.get("types") or res.ALL_TYPES)
            generated = res.generate(
                count,
                enterprises=int(doc.get("enterprises", 3)),
                devices=int(doc.get("devices", 50)),
                types=types,
                seed=doc.get("seed"),
                first_seq=self.state.stats.published,
            )
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"bad load request: {exc}") from None
        ids = [self.publish_notification(kind, resource) for kind, resource in generated]
        return web.json_response({"published": len(ids), "messageIds": ids})

    async def control_publish(self, request: web.Request) -> web.StreamResponse:
        """Raw messages: ``{"messages": [{"data": base64 (any text), "attributes": {...}}]}``."""
        doc = await self._control_json(request)
        messages = doc.get("messages")
        if not isinstance(messages, list):
            raise web.HTTPBadRequest(text="'messages' must be a list")
        ids = self.state.publish(
            self.config.topic_path, [m for m in messages if isinstance(m, dict)]
        )
        return web.json_response({"messageIds": ids})

    # -- control: observation and settings ---------------------------------------------------

    async def control_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def control_acked(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([asdict(r) for r in self.state.acked])

    async def control_redelivered(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(self.state.redelivered_ids))

    async def control_expired(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(self.state.expired_ids))

    async def control_settings(self, request: web.Request) -> web.StreamResponse:
        doc = await self._control_json(request)
        c = self.config
        try:
            if "hold_s" in doc:
                c.hold_s = float(doc["hold_s"])
            if "ack_deadline_s" in doc:
                c.ack_deadline_s = float(doc["ack_deadline_s"])
                for sub in self.state.subscriptions.values():
                    sub.ack_deadline_s = c.ack_deadline_s
            if "retention_s" in doc:
                c.retention_s = float(doc["retention_s"])
                for sub in self.state.subscriptions.values():
                    sub.retention_s = c.retention_s
            if "max_messages_cap" in doc:
                c.max_messages_cap = max(1, int(doc["max_messages_cap"]))
            if "rate_limit_qps" in doc:
                value = doc["rate_limit_qps"]
                c.rate_limit_qps = None if value is None else float(value)
            if "token_lifetime_s" in doc:
                self.auth.token_lifetime_s = int(doc["token_lifetime_s"])
            if "ack_mode" in doc:
                self.set_ack_mode(str(doc["ack_mode"]))
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"bad setting: {exc}") from None
        return web.json_response(asdict(c))

    async def control_expire_leases(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"released": self.state.expire_leases_now()})
