"""The simulator's control API (``/_sim/...``): drive it from tests, dev stacks and benchmarks.

* ``GET  /_sim/locations`` and ``POST /_sim/locations`` ``{uId?, orgName?, expiresInDays?}``:
  list or add locations; each entry carries its ``sToken``.
* ``POST /_sim/locations/{uId}/revoke``: the sToken is revoked (9625 from then on).
* ``POST /_sim/locations/{uId}/expire-versions``: every ``versionId`` handed out so far becomes
  stale, so a ``sinceVersionId`` read answers 9721 (Apple keeps versions for a limited time).
* ``POST /_sim/notifications`` ``{uId?, notifications: [...]}``: deliver notifications as given
  (``notificationId``/``uId`` added when missing), whatever the subscribed types.
* ``POST /_sim/assets`` ``{uId?, adamId, pricingParam?, count, productType?}``: licences bought
  (count > 0) or refunded (< 0); sends ASSET_COUNT when subscribed.
* ``POST /_sim/bulk-associate`` ``{uId?, assets: N, devices: M}``: creates N assets with M
  licences and associates all of them with M new serial numbers through the real associate path.
* ``POST /_sim/users/{clientUserId}/accept`` ``{uId?}``: the user accepts the invitation
  (USER_ASSOCIATED).
* ``POST /_sim/failures`` ``{uId?, type?, eventId?, errorNumber?, assignments?|users?}``: one
  ``result: FAILURE`` notification for any action (``ASSOCIATE``, ``DISASSOCIATE``, ``REVOKE`` ->
  ASSET_MANAGEMENT; ``CREATE``, ``UPDATE``, ``RETIRE`` -> USER_MANAGEMENT): for the existing
  ``eventId`` (its type) or a new event of ``type``; the event's status becomes FAILED with the
  error (default 9603 "Internal error."), so event status and notification agree.
* ``POST /_sim/notifications/{notificationId}/reuse`` ``{notification?}``: send a notification
  already sent under that id again, same ``notificationId``, different content (the given
  ``notification`` body, else the original body plus ``"simulatorReissue": n``), as Apple's own
  documentation does with USER_MANAGEMENT create/update/retire.
* Newer notification types (``SUBSCRIPTION_MANAGEMENT``, ``SUBSCRIPTION_COUNT``,
  ``UNLIMITED_ASSET``): client config accepts them; send one with ``POST /_sim/notifications``.
* ``GET  /_sim/deliveries``: every notification with its attempts and outcome, plus a summary.
* ``GET|POST /_sim/faults``: read or change delivery knobs (see :class:`Faults`) and
  ``processing_delay_s`` / ``error_status_200``.
* ``POST /_sim/wait-idle?timeout_s=``: 200 once no async event is processing and no delivery is
  pending, 504 on timeout.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulators.apple.errors import ERROR_MESSAGES
from simulators.apple.world import ASSIGNMENT_ACTIONS, USER_ACTIONS, Location

if TYPE_CHECKING:
    from simulators.apple.server import AppleSimulator

MAX_WAIT_S = 600.0


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": message}).decode(), content_type="application/json"
    )


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("body is not JSON") from None
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object")
    return body


def _location_doc(location: Location) -> dict[str, Any]:
    return {
        "uId": location.uid,
        "orgName": location.org_name,
        "sToken": location.s_token,
        "revoked": location.revoked,
        "clientConfig": location.client_config,
    }


def control_routes(sim: AppleSimulator) -> list[web.RouteDef]:
    """Routes bound to ``sim``."""

    def location(body: dict[str, Any]) -> Location:
        uid = body.get("uId")
        if uid is None:
            return sim.default
        found = sim.location_by_uid(str(uid))
        if found is None:
            raise web.HTTPNotFound(text="unknown uId")
        return found

    async def list_locations(request: web.Request) -> web.Response:
        return _json({"locations": [_location_doc(loc) for loc in sim.locations.values()]})

    async def add_location(request: web.Request) -> web.Response:
        body = await _body(request)
        days = body.get("expiresInDays", 365)
        if not isinstance(days, int | float):
            raise _bad("expiresInDays must be a number")
        loc = sim.add_location(body.get("uId"), str(body.get("orgName", "Simulated Org")), days)
        return _json(_location_doc(loc), 201)

    async def revoke_location(request: web.Request) -> web.Response:
        loc = location({"uId": request.match_info["uid"]})
        loc.revoked = True
        return _json(_location_doc(loc))

    async def expire_versions(request: web.Request) -> web.Response:
        loc = location({"uId": request.match_info["uid"]})
        expired = len(loc.version_ids)
        loc.version_ids.clear()
        return _json({"expired": expired})

    async def inject(request: web.Request) -> web.Response:
        body = await _body(request)
        loc = location(body)
        notes = body.get("notifications")
        if not isinstance(notes, list) or not all(isinstance(n, dict) for n in notes):
            raise _bad("notifications must be a list of objects")
        if not loc.client_config.get("notificationUrl"):
            raise _bad("location has no notification URL: POST /mdm/v2/client/config first")
        ids = []
        for note in notes:
            payload = dict(note)
            payload.setdefault("notificationId", str(uuid.uuid4()))
            payload.setdefault("uId", loc.uid)
            sim.notify(loc, payload, force=True)
            ids.append(payload["notificationId"])
        return _json({"notificationIds": ids}, 202)

    async def buy(request: web.Request) -> web.Response:
        body = await _body(request)
        loc = location(body)
        adam_id, count = body.get("adamId"), body.get("count")
        if not isinstance(adam_id, str) or not isinstance(count, int):
            raise _bad("adamId (string) and count (integer) are required")
        attrs = {"product_type": str(body.get("productType", "App"))}
        note = loc.buy(adam_id, str(body.get("pricingParam", "STDQ")), count, **attrs)
        sim.notify(loc, note)
        return _json({"notificationId": note["notificationId"]}, 202)

    async def bulk_associate(request: web.Request) -> web.Response:
        body = await _body(request)
        loc = location(body)
        n_assets, n_devices = body.get("assets"), body.get("devices")
        if not isinstance(n_assets, int) or not isinstance(n_devices, int):
            raise _bad("assets and devices (integers) are required")
        prefix = uuid.uuid4().hex[:8]
        assets = [(f"9{prefix[:4]}{i:05d}", "STDQ") for i in range(n_assets)]
        for adam_id, pricing in assets:
            loc.buy(adam_id, pricing, n_devices)
        serials = [f"SIM{prefix}{i:06d}" for i in range(n_devices)]
        event = loc.new_event("ASSOCIATE", n_assets * n_devices)
        sim_assets = list(assets)

        sim.finish_later(loc, lambda: loc.process_manage(event, sim_assets, serials, []))
        return _json(
            {
                "eventId": event.event_id,
                "numRequested": event.num_requested,
                "assets": [{"adamId": a, "pricingParam": p} for a, p in assets],
                "serialNumbers": serials,
            },
            202,
        )

    async def accept(request: web.Request) -> web.Response:
        body = await _body(request)
        loc = location(body)
        note = loc.accept_invitation(request.match_info["client_user_id"])
        if note is None:
            raise web.HTTPConflict(text="no registered user with that clientUserId")
        sim.notify(loc, note)
        return _json({"notificationId": note["notificationId"]}, 202)

    async def failure(request: web.Request) -> web.Response:
        body = await _body(request)
        loc = location(body)
        number = body.get("errorNumber", 9603)
        if number not in ERROR_MESSAGES:
            raise _bad(f"errorNumber must be one of {sorted(ERROR_MESSAGES)}")
        event_id = body.get("eventId")
        event = loc.events.get(event_id) if isinstance(event_id, str) else None
        if event_id is not None and event is None:
            raise web.HTTPNotFound(text="unknown eventId")
        if event is None:
            action = body.get("type")
            if action not in ASSIGNMENT_ACTIONS + USER_ACTIONS:
                raise _bad(f"type must be one of {list(ASSIGNMENT_ACTIONS + USER_ACTIONS)}")
            event = loc.new_event(str(action), 1)
        if event.event_type in ASSIGNMENT_ACTIONS:
            default: list[dict[str, Any]] = [
                {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": "SIM-FAIL-1"}
            ]
            targets = body.get("assignments", default)
        else:
            targets = body.get("users", [{"clientUserId": "client-fail-1"}])
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            raise _bad("assignments / users must be a list of objects")
        note = loc.fail_event(event, int(number), targets)
        sim.notify(loc, note, force=True)
        return _json({"notificationId": note["notificationId"], "eventId": event.event_id}, 202)

    async def reuse(request: web.Request) -> web.Response:
        original = sim.sent.get(request.match_info["notification_id"])
        if original is None:
            raise web.HTTPNotFound(text="no notification sent under that id")
        body = await _body(request)
        new_body = body.get("notification")
        if new_body is None:
            reissues = int(original["notification"].get("simulatorReissue", 0)) + 1
            new_body = {**original["notification"], "simulatorReissue": reissues}
        if not isinstance(new_body, dict):
            raise _bad("notification must be an object")
        payload = {**original, "notification": new_body}
        loc = location({"uId": payload.get("uId")})
        sim.notify(loc, payload, force=True)
        return _json({"notificationId": payload["notificationId"]}, 202)

    async def deliveries(request: web.Request) -> web.Response:
        records = sim.deliverer.records
        return _json(
            {
                "deliveries": [records[i].wire() for i in sim.deliverer.order if i in records],
                "summary": sim.deliverer.summary(),
            }
        )

    async def faults(request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _body(request)
            for key in ("processing_delay_s", "error_status_200"):
                if key in body:
                    setattr(sim.config, key, body.pop(key))
            try:
                sim.faults.update(body)
            except ValueError as exc:
                raise _bad(str(exc)) from None
        return _json(
            {
                **sim.faults.as_dict(),
                "processing_delay_s": sim.config.processing_delay_s,
                "error_status_200": sim.config.error_status_200,
            }
        )

    async def wait_idle(request: web.Request) -> web.Response:
        try:
            timeout = min(MAX_WAIT_S, float(request.query.get("timeout_s", "30")))
        except ValueError:
            raise _bad("timeout_s must be a number") from None
        idle = await sim.wait_idle(timeout)
        return _json({"idle": idle, "summary": sim.deliverer.summary()}, 200 if idle else 504)

    return [
        web.get("/_sim/locations", list_locations),
        web.post("/_sim/locations", add_location),
        web.post("/_sim/locations/{uid}/revoke", revoke_location),
        web.post("/_sim/locations/{uid}/expire-versions", expire_versions),
        web.post("/_sim/notifications", inject),
        web.post("/_sim/notifications/{notification_id}/reuse", reuse),
        web.post("/_sim/failures", failure),
        web.post("/_sim/assets", buy),
        web.post("/_sim/bulk-associate", bulk_associate),
        web.post("/_sim/users/{client_user_id}/accept", accept),
        web.get("/_sim/deliveries", deliveries),
        web.get("/_sim/faults", faults),
        web.post("/_sim/faults", faults),
        web.post("/_sim/wait-idle", wait_idle),
    ]
