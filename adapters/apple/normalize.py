"""Apple notification (parsed JSON) -> canonical event, per DESIGN.md section 3.

* ``id`` = ``notificationId`` (a redelivery carries the same one), ``source`` =
  ``/apple/locations/{uId}``, key ``apple:{uId}`` (location order), ``time`` = receipt time (Apple
  gives none), ``data.raw`` = the notification exactly as received.
* ``vendortype`` is the notification type, with the sub-type for ASSET_MANAGEMENT and
  USER_MANAGEMENT (``ASSET_MANAGEMENT/ASSOCIATE``), as in the taxonomy table.
* The type states the outcome: ASSET_MANAGEMENT / USER_MANAGEMENT with ``result: SUCCESS`` keep
  their success types; ``result: FAILURE`` becomes ``mdm.assignment.failed`` / ``mdm.user.failed``
  (``data.action`` = Apple's ``type``, ``data.result``, ``data.error``); any other ``result``
  (or none) becomes ``mdm.unknown``, so a consumer switching on ``type`` never acts on a failure.
* An unknown ``notificationType`` (or an unknown sub-type) becomes ``mdm.unknown``: forwarded,
  never dropped. A known type whose body violates the documented shape raises
  :class:`~broker.errors.NormalizationError` (the caller dead-letters it; docs/apple.md says why
  it is not published as a subset).
* Polled event status (reconciliation) follows the same rule: COMPLETE ->
  ``mdm.apple.event_status``, FAILED -> the failure type of its ``eventType``, anything else
  (including 9708 "not found") -> ``mdm.unknown``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from adapters.apple.models import (
    AssetCountBody,
    AssetManagementBody,
    ErrorResponse,
    NotificationEnvelope,
    StatusResponse,
    UserAssociatedBody,
    UserManagementBody,
)
from broker.errors import NormalizationError
from broker.events import (
    AppleEventStatusData,
    AssignmentFailedData,
    CanonicalEvent,
    EventData,
    EventType,
    RawOnlyData,
    UserFailedData,
    Vendor,
    VendorErrorInfo,
    apple_key,
    make_event,
    make_event_from_fields,
)

SCHEMA = "schema"
UID_MISMATCH = "uid_mismatch"

_ASSET_MANAGEMENT_TYPES = {
    "ASSOCIATE": EventType.ASSIGNMENT_ASSOCIATED,
    "DISASSOCIATE": EventType.ASSIGNMENT_DISASSOCIATED,
    "REVOKE": EventType.ASSIGNMENT_REVOKED,
}
_USER_MANAGEMENT_TYPES = {
    "CREATE": EventType.USER_CREATED,
    "UPDATE": EventType.USER_UPDATED,
    "RETIRE": EventType.USER_RETIRED,
}
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
PENDING_EVENT_STATUS = "PENDING"
COMPLETE_EVENT_STATUS = "COMPLETE"
FAILED_EVENT_STATUS = "FAILED"


def _error(value: ErrorResponse | None) -> VendorErrorInfo | None:
    return None if value is None else VendorErrorInfo.model_validate(value)


def parse_envelope(raw: Any) -> NotificationEnvelope:
    """Validate the common fields; raises NormalizationError(``schema``) on a violation."""
    if not isinstance(raw, dict):
        raise NormalizationError(SCHEMA, "a notification is a JSON object")
    try:
        return NotificationEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise NormalizationError(SCHEMA, _summary(exc)) from exc


def _summary(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


Fields = dict[str, Any]
"""Canonical ``data`` fields of one type in their JSON form, ``raw`` left out: built from the
validated wire shapes (one validation pass; their entries are canonical already, see
:mod:`adapters.apple.models`). tests/unit/apple/test_normalize.py proves, for every type, that
they are exactly what ``model_dump(mode="json")`` of the type's model gives."""


def _classify(env: NotificationEnvelope) -> tuple[EventType, str, Fields, str | None]:
    """(type, vendortype, data fields, subject) of a validated envelope."""
    body = env.notification
    kind = env.notification_type
    if kind == "TEST_NOTIFICATION":
        return EventType.TEST, kind, {}, None
    if kind == "ASSET_COUNT":
        count = AssetCountBody.model_validate(body)
        fields: Fields = {  # AssetCountChangedData
            "adam_id": count.adam_id,
            "pricing_param": count.pricing_param,
            "count_delta": count.count_delta,
        }
        return EventType.ASSET_COUNT_CHANGED, kind, fields, count.adam_id
    if kind == "ASSET_MANAGEMENT":
        am = AssetManagementBody.model_validate(body)
        vendortype = f"{kind}/{am.type}"
        success_type = _ASSET_MANAGEMENT_TYPES.get(am.type)
        if success_type is None or am.result not in (SUCCESS, FAILURE):
            return EventType.UNKNOWN, vendortype, {}, am.event_id
        assignments = am.assignments
        if am.result == FAILURE:
            failed: Fields = {  # AssignmentFailedData
                "action": am.type,
                "result": am.result,
                "error": am.error,
                "event_id": am.event_id,
                "assignments": assignments,
            }
            return EventType.ASSIGNMENT_FAILED, vendortype, failed, am.event_id
        assigned: Fields = {  # AssignmentData
            "event_id": am.event_id,
            "result": am.result,
            "assignments": assignments,
            "error": am.error,
        }
        return success_type, vendortype, assigned, am.event_id
    if kind == "USER_MANAGEMENT":
        um = UserManagementBody.model_validate(body)
        vendortype = f"{kind}/{um.type}"
        success_type = _USER_MANAGEMENT_TYPES.get(um.type)
        if success_type is None or um.result not in (SUCCESS, FAILURE):
            return EventType.UNKNOWN, vendortype, {}, um.event_id
        users = um.users
        if um.result == FAILURE:
            user_failed: Fields = {  # UserFailedData
                "action": um.type,
                "result": um.result,
                "error": um.error,
                "event_id": um.event_id,
                "users": users,
            }
            return EventType.USER_FAILED, vendortype, user_failed, um.event_id
        managed: Fields = {  # UserData
            "event_id": um.event_id,
            "result": um.result,
            "users": users,
            "error": um.error,
        }
        return success_type, vendortype, managed, um.event_id
    if kind == "USER_ASSOCIATED":
        ua = UserAssociatedBody.model_validate(body)
        users = ua.associated_users
        subject = users[0]["client_user_id"] if len(users) == 1 else None
        return EventType.USER_ASSOCIATED, kind, {"users": users}, subject  # UserAssociatedData
    return EventType.UNKNOWN, kind, {}, None  # RawOnlyData


def normalize(
    raw: Any,
    *,
    received_at: datetime | None = None,
    expected_uid: str | None = None,
    raw_json: bytes | None = None,
) -> CanonicalEvent:
    """Map one notification (parsed JSON) to its canonical event.

    ``raw_json``: the bytes ``raw`` was parsed from; when given, they become ``data.raw`` in the
    Kafka record unchanged (lossless; see :func:`broker.events.encode_event`).

    Raises :class:`NormalizationError` with reason ``schema`` (documented shape violated) or
    ``uid_mismatch`` (``expected_uid`` given and the notification names another location).
    """
    env = parse_envelope(raw)
    if expected_uid is not None and env.uid != expected_uid:
        raise NormalizationError(UID_MISMATCH, "notification is for another location")
    try:
        event_type, vendortype, fields, subject = _classify(env)
    except ValidationError as exc:
        raise NormalizationError(SCHEMA, f"{env.notification_type}: {_summary(exc)}") from exc
    return make_event_from_fields(
        id=env.notification_id,
        vendor=Vendor.APPLE,
        tenant=env.uid,
        type=event_type,
        vendortype=vendortype,
        partitionkey=apple_key(env.uid),
        raw=raw,
        fields=fields,
        time=received_at,
        subject=subject,
        raw_json=raw_json,
    )


def event_id_of(event: CanonicalEvent) -> str | None:
    """The Apple async ``eventId`` an event reports on (assignment and user management)."""
    value = event.data.get("event_id")
    return value if isinstance(value, str) else None


_ASSIGNMENT_ACTIONS = frozenset(_ASSET_MANAGEMENT_TYPES)
_USER_ACTIONS = frozenset(_USER_MANAGEMENT_TYPES)


def _status_classify(
    status: StatusResponse, raw: dict[str, Any], event_id: str
) -> tuple[EventType, EventData]:
    """The outcome rule for a polled event status (see the module docstring)."""
    if status.event_status == COMPLETE_EVENT_STATUS:
        data = AppleEventStatusData(
            raw=raw,
            event_id=event_id,
            event_status=status.event_status,
            event_type=status.event_type,
            num_completed=status.num_completed,
            num_requested=status.num_requested,
            failures=[f for f in (_error(e) for e in status.failures) if f is not None],
        )
        return EventType.APPLE_EVENT_STATUS, data
    action = status.event_type
    if status.event_status == FAILED_EVENT_STATUS and action is not None:
        error = _error(status.failures[0]) if status.failures else None
        if action in _ASSIGNMENT_ACTIONS:
            return EventType.ASSIGNMENT_FAILED, AssignmentFailedData(
                raw=raw, action=action, result=status.event_status, error=error, event_id=event_id
            )
        if action in _USER_ACTIONS:
            return EventType.USER_FAILED, UserFailedData(
                raw=raw, action=action, result=status.event_status, error=error, event_id=event_id
            )
    return EventType.UNKNOWN, RawOnlyData(raw=raw)


def status_event(
    status: StatusResponse, raw: dict[str, Any], *, event_id: str, uid: str
) -> CanonicalEvent:
    """The event for a polled final status: ``mdm.apple.event_status`` (COMPLETE), a failure type
    (FAILED) or ``mdm.unknown`` (any other status). The id ``status:{eventId}:{eventStatus}`` is
    deterministic, so polling the same final outcome twice (e.g. across a restart) dedupes."""
    event_type, data = _status_classify(status, raw, event_id)
    return make_event(
        id=f"status:{event_id}:{status.event_status}",
        vendor=Vendor.APPLE,
        tenant=uid,
        type=event_type,
        vendortype="EVENT_STATUS",
        partitionkey=apple_key(uid),
        data=data,
        subject=event_id,
    )
