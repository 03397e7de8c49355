"""The simulator's HTTP surface: Kapua's REST API under ``/v1`` plus a control API ``/control``.

Kapua endpoints (VENDOR_NOTES 3.2-3.6): ``POST /v1/authentication/{user,apikey,refresh,logout}``;
``/v1/{scopeId}/devices`` and ``.../devices/{deviceId}/operations[/{id}[/notifications[/{nid}]]]``
with GET lists (``offset``, ``limit``, ``askTotalCount``, ``sortParam``, ``sortDir``, ``resource``),
``POST _query`` / ``_count`` (body: kapuaQuery; only paging fields are honoured, as in Kapua),
single GET (404 ``entityNotFoundExceptionInfo``) and DELETE. ``_`` is the session's scope.
401 answers have an empty body, except a failed refresh (ExceptionInfo), as in Kapua.

Control API (not Kapua): ``POST /control/devices``, ``POST /control/operations`` (bulk start),
``GET /control/state``, ``GET /control/operations``, ``GET /control/returned`` (every row returned
to any client), ``GET /control/emitted``, ``GET /control/polls``, ``POST /control/polls/reset``,
``POST /control/faults``, ``POST /control/operations/{id}/delete``, ``POST /control/tokens/expire``,
``POST /control/operations/{id}/status`` (set any status string, e.g. STALE or CANCELLED),
``POST /control/operations/{id}/rows`` (inject a row, fields overridden: e.g. a wrong
``operationId``). ``POST /control/faults`` with ``badBody`` (``non_json`` | ``schema``) makes the
lists of ``badBodyKinds`` (default ``["devices"]``) answer 200 with a body that is not Kapua's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from broker.httpserve import start_site
from broker.lifecycle import AsyncService, Lifecycle
from simulators.kapua.state import (
    BAD_BODIES,
    Faults,
    SimConfig,
    SimState,
    TokenRecord,
    iso,
    now_utc,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_KEY: web.AppKey[SimState] = web.AppKey("kapua_sim_state", SimState)
TOKEN_KEY: web.RequestKey[TokenRecord] = web.RequestKey("kapua_token", TokenRecord)
SCOPE_KEY: web.RequestKey[str] = web.RequestKey("kapua_scope", str)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, kind: str, code: str, message: str, **extra: Any) -> web.Response:
    body = {"type": kind, "httpErrorCode": status, "message": message, "kapuaErrorCode": code}
    body.update(extra)
    return _json(body, status)


def not_found(entity_type: str, entity_id: str) -> web.Response:
    return _error(
        404,
        "entityNotFoundExceptionInfo",
        "ENTITY_NOT_FOUND",
        f"The entity of type {entity_type} with id/name {entity_id} was not found.",
        entityType=entity_type,
        entityId=entity_id,
    )


def _unauthenticated() -> web.Response:
    return web.Response(status=401)  # Kapua: KapuaAuthenticationExceptionMapper, empty body


def _broken_200(mode: str, kind: str) -> web.Response:
    """A 200 that is not Kapua's: an HTML page (a proxy in between) or a list that violates
    the ``kapuaListResult`` schema."""
    if mode == "non_json":
        return web.Response(
            status=200,
            text="<html><body>upstream proxy error</body></html>",
            content_type="text/html",
        )
    return _json(
        {"type": f"{kind}ListResult", "limitExceeded": "maybe", "size": "one", "items": [{"x": 1}]}
    )


def _timeout_500() -> web.Response:
    return _error(
        500,
        "exceptionInfo",
        "DEVICE_MANAGEMENT_TIMEOUT",
        "The device did not answer the management request in time.",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Reply(
            _error(400, "illegalArgumentExceptionInfo", "ILLEGAL_ARGUMENT", "body is not JSON")
        ) from None
    return doc if isinstance(doc, dict) else {}


def _int(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        result = int(value)
    except (TypeError, ValueError):
        raise _bad_arg(name, str(value)) from None
    if result < 0:
        raise _bad_arg(name, str(value))
    return result


class _Reply(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _bad_arg(name: str, value: str) -> _Reply:
    return _Reply(
        _error(
            400,
            "illegalArgumentExceptionInfo",
            "ILLEGAL_ARGUMENT",
            f"An illegal value was provided for the argument {name}: {value}.",
            argumentName=name,
            argumentValue=value,
        )
    )


@dataclass(frozen=True)
class _Page:
    offset: int
    limit: int
    ask_total: bool


def _paging(source: Mapping[str, Any], *, ask_total: bool) -> _Page:
    """``offset``/``limit`` (Kapua defaults 0/50) from GET query params or a ``kapuaQuery`` body;
    ``askTotalCount`` is parsed by the caller (a string in a query, a boolean in a body)."""
    return _Page(
        offset=_int(source.get("offset"), 0, "offset"),
        limit=_int(source.get("limit"), 50, "limit"),
        ask_total=ask_total,
    )


def _list_result(kind: str, rows: list[dict[str, Any]], page: _Page) -> dict[str, Any]:
    offset, limit = page.offset, page.limit
    window = rows[offset : offset + limit + 1]  # Kapua fetches limit+1 rows for limitExceeded
    items = window[:limit]
    result: dict[str, Any] = {
        "type": f"{kind}ListResult",
        "limitExceeded": len(window) > limit,
        "size": len(items),
        "items": items,
    }
    if page.ask_total:
        result["totalCount"] = len(rows)
    return result


def _sorted(
    rows: list[dict[str, Any]], request: web.Request, default_sort: str
) -> list[dict[str, Any]]:
    param = request.query.get("sortParam") or default_sort
    descending = request.query.get("sortDir", "ASCENDING").upper() == "DESCENDING"
    resource = request.query.get("resource")
    if resource:
        rows = [r for r in rows if str(r.get("resource", "")).lower() == resource.lower()]
    return sorted(rows, key=lambda r: (str(r.get(param, "")), str(r["id"])), reverse=descending)


def build_app(state: SimState) -> web.Application:
    """The aiohttp application of a simulator holding ``state``."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await _authenticated(request, handler)
        except _Reply as reply:
            return reply.response

    async def _authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        public = path.startswith(("/control", "/v1/authentication/"))
        if public and path != "/v1/authentication/logout":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        token_id = header[7:] if header.startswith("Bearer ") else ""
        record = state.valid_token(token_id)
        if record is None:
            state.count("unauthorized_401")
            return _unauthenticated()
        request[TOKEN_KEY] = record
        scope = request.match_info.get("scopeId")
        if scope is not None:
            resolved = record.scope_id if scope == "_" else scope
            if resolved != record.scope_id:
                return _error(
                    403,
                    "subjectUnauthorizedExceptionInfo",
                    "SUBJECT_UNAUTHORIZED",
                    "User does not have permission to perform this action.",
                    permission={"domain": "device", "action": "read", "targetScopeId": scope},
                )
            request[SCOPE_KEY] = resolved
        return await handler(request)

    def token_doc(record: Any) -> dict[str, Any]:
        return {
            "type": "accessToken",
            "id": record.token_id[-11:],
            "scopeId": record.scope_id,
            "createdOn": iso(record.created),
            "createdBy": record.user_id,
            "modifiedOn": iso(record.created),
            "modifiedBy": record.user_id,
            "optlock": 1,
            "tokenId": record.token_id,
            "userId": record.user_id,
            "expiresOn": iso(record.expires),
            "refreshToken": record.refresh_token,
            "refreshExpiresOn": iso(record.refresh_expires),
        }

    async def login_user(request: web.Request) -> web.Response:
        body = await _body(request)
        cfg = state.config
        if body.get("username") != cfg.username or body.get("password") != cfg.password:
            state.count("login_refused")
            return _unauthenticated()
        state.count("logins")
        return _json(token_doc(state.issue_token()))

    async def login_apikey(request: web.Request) -> web.Response:
        body = await _body(request)
        if body.get("apiKey") not in state.config.api_keys:
            state.count("login_refused")
            return _unauthenticated()
        state.count("logins")
        return _json(token_doc(state.issue_token()))

    async def refresh(request: web.Request) -> web.Response:
        body = await _body(request)
        record = state.refresh(str(body.get("tokenId", "")), str(body.get("refreshToken", "")))
        if record is None:
            state.count("refresh_refused")
            return _error(
                401,
                "kapuaAuthenticationExceptionInfo",
                "INVALID_REFRESH_TOKEN",
                "The refresh token is invalid or expired.",
            )
        return _json(token_doc(record))

    async def logout(request: web.Request) -> web.Response:
        record = request[TOKEN_KEY]
        record.invalidated = now_utc()
        state.count("logouts")
        return web.Response(status=204)

    # -- devices -------------------------------------------------------------------------------

    def scope_devices(request: web.Request) -> dict[str, dict[str, Any]]:
        return state.devices.get(request[SCOPE_KEY], {})

    async def devices_list(request: web.Request) -> web.Response:
        if state.take_fault("devices"):
            return _timeout_500()
        if (mode := state.bad_body("devices")) is not None:
            return _broken_200(mode, "device")
        rows = _sorted(list(scope_devices(request).values()), request, "createdOn")
        q = request.query
        return _json(
            _list_result(
                "device",
                rows,
                _paging(q, ask_total=q.get("askTotalCount") == "true"),
            )
        )

    async def devices_query(request: web.Request) -> web.Response:
        body = await _body(request)
        rows = sorted(scope_devices(request).values(), key=lambda r: (r["createdOn"], r["id"]))
        return _json(
            _list_result(
                "device",
                rows,
                _paging(body, ask_total=bool(body.get("askTotalCount"))),
            )
        )

    async def devices_count(request: web.Request) -> web.Response:
        return _json({"type": "countResult", "count": len(scope_devices(request))})

    def find_device(request: web.Request) -> dict[str, Any] | None:
        return scope_devices(request).get(request.match_info["deviceId"])

    async def device_get(request: web.Request) -> web.Response:
        device = find_device(request)
        if device is None:
            return not_found("device", request.match_info["deviceId"])
        return _json(device)

    async def device_delete(request: web.Request) -> web.Response:
        if scope_devices(request).pop(request.match_info["deviceId"], None) is None:
            return not_found("device", request.match_info["deviceId"])
        return web.Response(status=204)

    # -- operations ----------------------------------------------------------------------------

    def device_ops(request: web.Request) -> list[dict[str, Any]]:
        scope, device = request[SCOPE_KEY], request.match_info["deviceId"]
        return [
            op.doc
            for op in state.operations.values()
            if op.doc["scopeId"] == scope and op.doc["deviceId"] == device
        ]

    async def ops_list(request: web.Request) -> web.Response:
        if state.take_fault("operations"):
            return _timeout_500()
        if (mode := state.bad_body("operations")) is not None:
            return _broken_200(mode, "deviceManagementOperation")
        rows = _sorted(device_ops(request), request, "startedOn")
        q = request.query
        return _json(
            _list_result(
                "deviceManagementOperation",
                rows,
                _paging(q, ask_total=q.get("askTotalCount") == "true"),
            )
        )

    async def ops_query(request: web.Request) -> web.Response:
        body = await _body(request)
        rows = sorted(device_ops(request), key=lambda r: (r["startedOn"], r["id"]))
        return _json(
            _list_result(
                "deviceManagementOperation",
                rows,
                _paging(body, ask_total=bool(body.get("askTotalCount"))),
            )
        )

    async def ops_count(request: web.Request) -> web.Response:
        await _body(request)
        return _json({"type": "countResult", "count": len(device_ops(request))})

    def find_op(request: web.Request) -> Any:
        op = state.operations.get(request.match_info["operationId"])
        if op is None or op.doc["scopeId"] != request[SCOPE_KEY]:
            return None
        return op

    async def op_get(request: web.Request) -> web.Response:
        if state.take_fault("operations"):
            return _timeout_500()
        state.take_doomed(request.match_info["operationId"])
        op = find_op(request)
        state.record_poll(request.match_info["operationId"], request.headers.get("User-Agent", ""))
        if op is None:
            return not_found("deviceManagementOperation", request.match_info["operationId"])
        return _json(op.doc)

    async def op_delete(request: web.Request) -> web.Response:
        if find_op(request) is None or not state.delete_operation(
            request.match_info["operationId"]
        ):
            return not_found("deviceManagementOperation", request.match_info["operationId"])
        return web.Response(status=204)

    # -- notifications -------------------------------------------------------------------------

    def op_rows(request: web.Request) -> list[dict[str, Any]]:
        # As in Kapua the filter is the operation id only (deviceId is not part of it); an
        # unknown operation simply has no rows.
        op = state.operations.get(request.match_info["operationId"])
        if op is None or op.doc["scopeId"] != request[SCOPE_KEY]:
            return []
        return list(op.rows)

    def poll_seen(request: web.Request) -> None:
        state.record_poll(request.match_info["operationId"], request.headers.get("User-Agent", ""))

    async def notif_list(request: web.Request) -> web.Response:
        poll_seen(request)
        if state.take_fault("notifications"):
            return _timeout_500()
        if (mode := state.bad_body("notifications")) is not None:
            return _broken_200(mode, "managementOperationNotification")
        rows = _sorted(op_rows(request), request, "sentOn")
        q = request.query
        result = _list_result(
            "managementOperationNotification",
            rows,
            _paging(q, ask_total=q.get("askTotalCount") == "true"),
        )
        state.record_returned(result["items"])
        return _json(result)

    async def notif_query(request: web.Request) -> web.Response:
        poll_seen(request)
        body = await _body(request)
        if state.take_fault("notifications"):
            return _timeout_500()
        rows = sorted(op_rows(request), key=lambda r: (r["sentOn"], r["createdOn"], r["id"]))
        result = _list_result(
            "managementOperationNotification",
            rows,
            _paging(body, ask_total=bool(body.get("askTotalCount"))),
        )
        state.record_returned(result["items"])
        return _json(result)

    async def notif_count(request: web.Request) -> web.Response:
        poll_seen(request)
        await _body(request)
        if state.take_fault("notifications"):
            return _timeout_500()
        return _json({"type": "countResult", "count": len(op_rows(request))})

    async def notif_get(request: web.Request) -> web.Response:
        nid = request.match_info["notificationId"]
        row = next((r for r in op_rows(request) if r["id"] == nid), None)
        if row is None:
            return not_found("managementOperationNotification", nid)
        state.record_returned([row])
        return _json(row)

    async def notif_delete(request: web.Request) -> web.Response:
        nid = request.match_info["notificationId"]
        op = state.operations.get(request.match_info["operationId"])
        if op is None or not any(r["id"] == nid for r in op.rows):
            return not_found("managementOperationNotification", nid)
        op.rows = [r for r in op.rows if r["id"] != nid]
        state.rows_by_id.pop(nid, None)
        return web.Response(status=204)

    # -- control API ---------------------------------------------------------------------------

    async def ctl_devices(request: web.Request) -> web.Response:
        body = await _body(request)
        scope = str(body.get("scopeId") or state.config.scope_id)
        ids = state.add_devices(scope, _int(body.get("count"), 1, "count"))
        return _json({"scopeId": scope, "deviceIds": ids})

    async def ctl_start_ops(request: web.Request) -> web.Response:
        body = await _body(request)
        scope = str(body.get("scopeId") or state.config.scope_id)
        devices = body.get("deviceIds") or list(state.devices.get(scope, {}))
        if not devices:
            return _json({"error": "no devices in scope; POST /control/devices first"}, 400)
        count = _int(body.get("count"), 1, "count")
        steps = _int(body.get("steps"), 4, "steps")
        interval = float(body.get("stepIntervalS", state.config.step_interval_s))
        fail_every = _int(body.get("failEvery"), 0, "failEvery")
        jitter = float(body.get("jitterS", 0.0))
        delay = float(body.get("startDelayS", 0.0))
        started = []
        for i in range(count):
            op = state.start_operation(
                scope,
                str(devices[i % len(devices)]),
                steps=steps,
                step_interval_s=interval,
                fail=fail_every > 0 and (i % fail_every) == fail_every - 1,
                resource=str(body.get("resource", "download")),
                jitter_s=jitter,
                start_delay_s=delay,
                install=bool(body.get("install", False)),
                end_status=str(body["endStatus"]) if body.get("endStatus") else None,
            )
            started.append({"id": op.id, "deviceId": op.doc["deviceId"], "scopeId": scope})
        wake.set()
        return _json({"operations": started})

    async def ctl_state(request: web.Request) -> web.Response:
        return _json(state.summary())

    async def ctl_ops(request: web.Request) -> web.Response:
        return _json([op.doc for op in state.operations.values()])

    async def ctl_returned(request: web.Request) -> web.Response:
        return _json(state.returned)

    async def ctl_emitted(request: web.Request) -> web.Response:
        return _json(state.emitted)

    async def ctl_polls(request: web.Request) -> web.Response:
        return _json(state.polls)

    async def ctl_polls_reset(request: web.Request) -> web.Response:
        state.polls.clear()
        return web.Response(status=204)

    async def ctl_faults(request: web.Request) -> web.Response:
        body = await _body(request)
        kinds = body.get("kinds")
        bad = body.get("badBody")
        if bad is not None and bad not in BAD_BODIES:
            return _json({"error": f"badBody must be one of {list(BAD_BODIES)} or null"}, 400)
        bad_kinds = body.get("badBodyKinds")
        state.faults = Faults(
            fail_500_next=_int(body.get("fail500Next"), 0, "fail500Next"),
            fail_500_rate=float(body.get("fail500Rate", 0.0)),
            kinds=frozenset(kinds) if isinstance(kinds, list) else Faults().kinds,
            bad_body=bad,
            bad_body_kinds=(
                frozenset(bad_kinds) if isinstance(bad_kinds, list) else Faults().bad_body_kinds
            ),
        )
        return _json(state.summary()["faults"])

    async def ctl_delete_op(request: web.Request) -> web.Response:
        if not state.delete_operation(request.match_info["operationId"]):
            return _json({"error": "no such operation"}, 404)
        return web.Response(status=204)

    async def ctl_set_status(request: web.Request) -> web.Response:
        body = await _body(request)
        status = body.get("status")
        if not isinstance(status, str) or not status:
            return _json({"error": "status (a non-empty string) is required"}, 400)
        if not state.set_status(request.match_info["operationId"], status):
            return _json({"error": "no such operation"}, 404)
        return web.Response(status=204)

    async def ctl_inject_row(request: web.Request) -> web.Response:
        body = await _body(request)
        row = state.inject_row(request.match_info["operationId"], body)
        if row is None:
            return _json({"error": "no such operation"}, 404)
        wake.set()
        return _json(row)

    async def ctl_expire_tokens(request: web.Request) -> web.Response:
        return _json({"invalidated": state.expire_all_tokens()})

    # -- time ----------------------------------------------------------------------------------

    wake = asyncio.Event()

    async def ticker(app: web.Application) -> Any:
        async def loop() -> None:
            tick = state.config.tick_s
            while True:
                state.advance()
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), tick)

        task = asyncio.create_task(loop(), name="kapua-sim-ticker")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = web.Application(middlewares=[auth])
    app[STATE_KEY] = state
    dev = "/v1/{scopeId}/devices"
    ops = dev + "/{deviceId}/operations"
    notes = ops + "/{operationId}/notifications"
    app.add_routes(
        [
            web.post("/v1/authentication/user", login_user),
            web.post("/v1/authentication/apikey", login_apikey),
            web.post("/v1/authentication/refresh", refresh),
            web.post("/v1/authentication/logout", logout),
            web.get(dev, devices_list),
            web.post(dev + "/_query", devices_query),
            web.post(dev + "/_count", devices_count),
            web.get(dev + "/{deviceId}", device_get),
            web.delete(dev + "/{deviceId}", device_delete),
            web.get(ops, ops_list),
            web.post(ops + "/_query", ops_query),
            web.post(ops + "/_count", ops_count),
            web.get(ops + "/{operationId}", op_get),
            web.delete(ops + "/{operationId}", op_delete),
            web.get(notes, notif_list),
            web.post(notes + "/_query", notif_query),
            web.post(notes + "/_count", notif_count),
            web.get(notes + "/{notificationId}", notif_get),
            web.delete(notes + "/{notificationId}", notif_delete),
            web.post("/control/devices", ctl_devices),
            web.post("/control/operations", ctl_start_ops),
            web.get("/control/state", ctl_state),
            web.get("/control/operations", ctl_ops),
            web.get("/control/returned", ctl_returned),
            web.get("/control/emitted", ctl_emitted),
            web.get("/control/polls", ctl_polls),
            web.post("/control/polls/reset", ctl_polls_reset),
            web.post("/control/faults", ctl_faults),
            web.post("/control/operations/{operationId}/delete", ctl_delete_op),
            web.post("/control/operations/{operationId}/status", ctl_set_status),
            web.post("/control/operations/{operationId}/rows", ctl_inject_row),
            web.post("/control/tokens/expire", ctl_expire_tokens),
        ]
    )
    app.cleanup_ctx.append(ticker)
    return app


class KapuaSimulator(AsyncService):
    """Runs the simulator on loopback (``port=0`` picks a free port). ``async with`` or
    ``start()`` / ``stop()`` (the one lifecycle, no restart)."""

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SimState(config or SimConfig())
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.lifecycle = Lifecycle("KapuaSimulator")

    @property
    def base_url(self) -> str:
        """The REST root, as KapuaSettings.base_url expects it (with ``/v1``)."""
        return f"http://{self._host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        await self.lifecycle.start(self._start)

    async def _start(self) -> None:
        self._runner, _, self.port = await start_site(build_app(self.state), self._host, self._port)

    async def stop(self) -> None:
        await self.lifecycle.stop(self._halt)

    async def _halt(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
