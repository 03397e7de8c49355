"""EMM notification -> canonical event (DESIGN.md section 3).

Every notification type of the EMM API maps to one canonical type; an unrecognised
``notificationType`` (e.g. the newer ``enterpriseUpgrade``) becomes ``mdm.unknown`` and is forwarded,
never dropped. ``appRestricionsSchemaChange`` is spelled that way by the API itself (its event
object is ``appRestrictionsSchemaChangeEvent``).

* ``id``: :func:`broker.events.android_event_id` over (enterpriseId, notificationType,
  timestampMillis, canonical JSON of the rest of the notification, i.e. its event object). The EMM
  API gives no id of its own; a redelivered notification has the same content, hence the same id.
* key: :func:`broker.events.android_key` with the device when the event concerns one, else the
  product (``android:{enterpriseId}:-`` for test and unknown notifications).
* ``time``: ``timestampMillis``; ``data.raw``: the notification exactly as received.

A notification that is not an object, lacks ``enterpriseId``/``timestampMillis`` or a field the
API documents as always present raises :class:`NormalizationError` (it goes to the DLQ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.errors import NormalizationError
from broker.events import (
    CanonicalEvent,
    EventType,
    Vendor,
    android_event_id,
    android_key,
    make_event_from_fields,
)
from broker.metrics import RejectReason

_HEADER_FIELDS = ("enterpriseId", "timestampMillis", "notificationType")

Raw = Mapping[str, Any]


def _schema_error(detail: str) -> NormalizationError:
    return NormalizationError(RejectReason.SCHEMA.value, detail)


def _event_object(notification: Raw, field: str) -> Raw:
    value = notification.get(field)
    if not isinstance(value, Mapping):
        raise _schema_error(f"{field} missing or not an object")
    return value


def _required_str(obj: Raw, field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value:
        raise _schema_error(f"{where}.{field} missing or not a string")
    return value


def _optional_str(obj: Raw, field: str) -> str | None:
    value = obj.get(field)
    return value if isinstance(value, str) else None


def _str_list(obj: Raw, field: str, where: str) -> list[str]:
    value = obj.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _schema_error(f"{where}.{field} is not a list of strings")
    return list(value)


def _millis(value: Any, where: str) -> int:
    """int64 fields arrive as JSON strings (Google's convention) or numbers."""
    if isinstance(value, bool):
        raise _schema_error(f"{where} is not an int64")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise _schema_error(f"{where} is not an int64")


@dataclass(frozen=True)
class _Mapped:
    """A notification's canonical type and its ``data`` fields (``raw`` aside) in JSON form:
    exactly what ``model_dump(mode="json")`` of the type's model gives, field for field and in
    declaration order (tests/unit/android/test_normalize.py proves it per type), so the event is
    built without constructing and dumping the model (its values were validated here, once)."""

    type: EventType
    fields: dict[str, Any]
    device_id: str | None = None
    product_id: str | None = None


def _product_approval(n: Raw) -> _Mapped:
    ev = _event_object(n, "productApprovalEvent")
    product = _required_str(ev, "productId", "productApprovalEvent")
    fields = {"product_id": product, "approved": _optional_str(ev, "approved")}
    return _Mapped(EventType.APP_APPROVAL_CHANGED, fields, product_id=product)


def _install_failure(n: Raw) -> _Mapped:
    ev = _event_object(n, "installFailureEvent")
    product = _required_str(ev, "productId", "installFailureEvent")
    device = _optional_str(ev, "deviceId")
    fields = {
        "product_id": product,
        "device_id": device,
        "user_id": _optional_str(ev, "userId"),
        "failure_reason": _optional_str(ev, "failureReason"),
        "failure_details": _optional_str(ev, "failureDetails"),
    }
    return _Mapped(EventType.APP_INSTALL_FAILED, fields, device_id=device, product_id=product)


def _product_only(event_field: str, event_type: EventType) -> Callable[[Raw], _Mapped]:
    def mapper(n: Raw) -> _Mapped:
        ev = _event_object(n, event_field)
        product = _required_str(ev, "productId", event_field)
        return _Mapped(event_type, {"product_id": product}, product_id=product)

    return mapper


def _new_permissions(n: Raw) -> _Mapped:
    ev = _event_object(n, "newPermissionsEvent")
    product = _required_str(ev, "productId", "newPermissionsEvent")
    fields = {
        "product_id": product,
        "requested_permissions": _str_list(ev, "requestedPermissions", "newPermissionsEvent"),
        "approved_permissions": _str_list(ev, "approvedPermissions", "newPermissionsEvent"),
    }
    return _Mapped(EventType.APP_PERMISSIONS_CHANGED, fields, product_id=product)


def _availability(n: Raw) -> _Mapped:
    ev = _event_object(n, "productAvailabilityChangeEvent")
    product = _required_str(ev, "productId", "productAvailabilityChangeEvent")
    fields = {
        "product_id": product,
        "availability_status": _optional_str(ev, "availabilityStatus"),
    }
    return _Mapped(EventType.APP_AVAILABILITY_CHANGED, fields, product_id=product)


def _new_device(n: Raw) -> _Mapped:
    ev = _event_object(n, "newDeviceEvent")
    device = _required_str(ev, "deviceId", "newDeviceEvent")
    fields = {  # the AMAPI-only fields of DeviceEnrolledData are left out when unset
        "device_id": device,
        "user_id": _optional_str(ev, "userId"),
        "management_type": _optional_str(ev, "managementType"),
        "dpc_package_name": _optional_str(ev, "dpcPackageName"),
    }
    return _Mapped(EventType.DEVICE_ENROLLED, fields, device_id=device)


def _keyed_state(state: Any, where: str) -> dict[str, Any]:
    if not isinstance(state, Mapping):
        raise _schema_error(f"{where} is not an object")
    out: dict[str, Any] = {
        "key": _required_str(state, "key", where),
        "severity": _optional_str(state, "severity"),
        "message": _optional_str(state, "message"),
        "data": _optional_str(state, "data"),
        "state_timestamp_millis": None,
    }
    if "stateTimestampMillis" in state:
        out["state_timestamp_millis"] = _millis(
            state["stateTimestampMillis"], f"{where}.stateTimestampMillis"
        )
    return out


def _app_state(app: Any, where: str) -> dict[str, Any]:
    if not isinstance(app, Mapping):
        raise _schema_error(f"{where} is not an object")
    package = _optional_str(app, "packageName")
    states = app.get("keyedAppState", [])
    if not isinstance(states, list):
        raise _schema_error(f"{where}.keyedAppState is not a list")
    return {
        "product_id": f"app:{package}" if package else None,
        "keyed_app_state": [
            _keyed_state(s, f"{where}.keyedAppState[{i}]") for i, s in enumerate(states)
        ],
    }


def _device_report(n: Raw) -> _Mapped:
    ev = _event_object(n, "deviceReportUpdateEvent")
    device = _required_str(ev, "deviceId", "deviceReportUpdateEvent")
    report = ev.get("report", {})
    if not isinstance(report, Mapping):
        raise _schema_error("deviceReportUpdateEvent.report is not an object")
    apps = report.get("appState", [])
    if not isinstance(apps, list):
        raise _schema_error("deviceReportUpdateEvent.report.appState is not a list")
    last = report.get("lastUpdatedTimestampMillis")
    fields = {
        "device_id": device,
        "user_id": _optional_str(ev, "userId"),
        "last_updated_timestamp_millis": None
        if last is None
        else _millis(last, "report.lastUpdatedTimestampMillis"),
        "app_states": [_app_state(a, f"report.appState[{i}]") for i, a in enumerate(apps)],
    }
    return _Mapped(EventType.DEVICE_REPORT_UPDATED, fields, device_id=device)


def _test(n: Raw) -> _Mapped:
    return _Mapped(EventType.TEST, {})  # RawOnlyData: raw only (its AMAPI field left out)


def _unknown(n: Raw) -> _Mapped:
    return _Mapped(EventType.UNKNOWN, {})


_MAPPERS: dict[str, Callable[[Raw], _Mapped]] = {
    "productApproval": _product_approval,
    "installFailure": _install_failure,
    "appUpdate": _product_only("appUpdateEvent", EventType.APP_UPDATED),
    "newPermissions": _new_permissions,
    "appRestricionsSchemaChange": _product_only(
        "appRestrictionsSchemaChangeEvent", EventType.APP_CONFIG_SCHEMA_CHANGED
    ),
    "productAvailabilityChange": _availability,
    "newDevice": _new_device,
    "deviceReportUpdate": _device_report,
    "testNotification": _test,
    "unknown": _unknown,
}

#: Event object -> notificationType, for notifications that omit ``notificationType``.
_TYPE_BY_EVENT_FIELD = {
    "productApprovalEvent": "productApproval",
    "installFailureEvent": "installFailure",
    "appUpdateEvent": "appUpdate",
    "newPermissionsEvent": "newPermissions",
    "appRestrictionsSchemaChangeEvent": "appRestricionsSchemaChange",
    "productAvailabilityChangeEvent": "productAvailabilityChange",
    "newDeviceEvent": "newDevice",
    "deviceReportUpdateEvent": "deviceReportUpdate",
}

#: Every vendor type this module maps to a specific canonical type.
KNOWN_TYPES = frozenset(_MAPPERS)


def notification_type(notification: Raw) -> str:
    """``notificationType``, or inferred from the one event object present, else ``unknown``."""
    value = notification.get("notificationType")
    if isinstance(value, str) and value:
        return value
    present = [t for f, t in _TYPE_BY_EVENT_FIELD.items() if f in notification]
    return present[0] if len(present) == 1 else "unknown"


def notification_id(notification: Raw) -> str:
    """The canonical event id of a notification (see module docstring); validates the header."""
    enterprise = _required_str(notification, "enterpriseId", "notification")
    if "timestampMillis" not in notification:
        raise _schema_error("notification.timestampMillis missing")
    millis = _millis(notification["timestampMillis"], "notification.timestampMillis")
    body = {k: v for k, v in notification.items() if k not in _HEADER_FIELDS}
    return android_event_id(enterprise, notification_type(notification), millis, body)


def normalize_notification(notification: Any) -> CanonicalEvent:
    """Map one EMM notification to a canonical event; raises :class:`NormalizationError`."""
    if not isinstance(notification, Mapping):
        raise NormalizationError(RejectReason.MALFORMED.value, "notification is not a JSON object")
    raw = dict(notification)
    event_id = notification_id(notification)
    enterprise = _required_str(notification, "enterpriseId", "notification")
    millis = _millis(notification["timestampMillis"], "notification.timestampMillis")
    vendortype = notification_type(notification)
    mapper = _MAPPERS.get(vendortype, _unknown)
    mapped = mapper(notification)
    try:
        when = datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise _schema_error("notification.timestampMillis out of range") from None
    entity = mapped.device_id or mapped.product_id
    return make_event_from_fields(
        id=event_id,
        vendor=Vendor.ANDROID,
        tenant=enterprise,
        type=mapped.type,
        vendortype=vendortype,
        partitionkey=android_key(enterprise, entity),
        raw=raw,
        fields=mapped.fields,
        time=when,
        subject=entity,
    )
