"""Android Management API (AMAPI) notification, as a Cloud Pub/Sub message -> canonical events.

AMAPI publishes one Pub/Sub message per notification: the attribute ``notificationType`` names
the type and ``data`` is the base64 of the JSON of the resource concerned (VENDOR_NOTES.md 2.8):

============================  ======================  =========================================
notificationType              resource                canonical type
============================  ======================  =========================================
ENROLLMENT                    Device                  ``mdm.device.enrolled``
STATUS_REPORT                 Device                  ``mdm.device.status_reported``
COMMAND                       Operation               ``mdm.device.command_completed``, or
                                                      ``mdm.device.command_failed`` with ``error``
USAGE_LOGS                    BatchUsageLogEvents     ``mdm.device.usage_logged``, one per item
ENTERPRISE_UPGRADE            EnterpriseUpgradeEvent  ``mdm.enterprise.upgraded`` (SUCCEEDED)
anything else                 (kept in ``raw``)       ``mdm.unknown``
============================  ======================  =========================================

A COMMAND Operation that is not ``done``, an upgrade in another state and a usage-log batch
without items are forwarded as ``mdm.unknown`` (the type never claims an outcome it does not see).

Guarantees:

* ``id``: the Pub/Sub ``messageId`` (stable across redeliveries); ``{messageId}:{index}`` for the
  items of a usage-log batch. ``source``: ``/android/enterprises/{enterpriseId}`` (from the
  resource's name), so AMAPI and EMM events of one enterprise share a source.
* key: ``android:{enterpriseId}:{deviceId}`` (``-`` when no device is concerned): one device's
  events stay in one partition, in the order published.
* ``time``: the usage-log item's ``eventTime``, else the message's ``publishTime``.
* ``data.raw``: the decoded resource; ``data.pubsub``: message id, publish time and attributes.

A message whose ``data`` is not base64 of a JSON object, or whose resource lacks the name that
identifies its device, raises :class:`NormalizationError` (the caller dead-letters the message,
whose ``detail`` names the message id).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from broker.errors import NormalizationError
from broker.events import (
    CanonicalEvent,
    CommandError,
    DeviceCommandData,
    DeviceEnrolledData,
    DeviceStatusReportedData,
    DeviceUsageLogData,
    EnterpriseUpgradedData,
    EventData,
    EventType,
    PubsubInfo,
    RawOnlyData,
    Vendor,
    android_key,
    make_event,
)
from broker.metrics import RejectReason

Raw = Mapping[str, Any]

NOTIFICATION_TYPE_ATTRIBUTE = "notificationType"
UPGRADE_SUCCEEDED = "UPGRADE_STATE_SUCCEEDED"
UNKNOWN_ENTERPRISE = "-"


def _malformed(message_id: str, detail: str) -> NormalizationError:
    return NormalizationError(
        RejectReason.MALFORMED.value, f"pubsub message {message_id}: {detail}"
    )


def _schema(message_id: str, detail: str) -> NormalizationError:
    return NormalizationError(RejectReason.SCHEMA.value, f"pubsub message {message_id}: {detail}")


def _str(obj: Raw, field: str) -> str | None:
    value = obj.get(field)
    return value if isinstance(value, str) and value else None


def message_id_of(message: Any) -> str:
    """The message's ``messageId``, or ``?`` when it has none (only for diagnostics)."""
    if isinstance(message, Mapping):
        value = message.get("messageId")
        if isinstance(value, str) and value:
            return value
    return "?"


def parse_name(name: str | None) -> dict[str, str]:
    """``enterprises/E/devices/D/operations/O`` -> ``{"enterprises": E, "devices": D, ...}``."""
    if not name:
        return {}
    parts = name.split("/")
    return {parts[i]: parts[i + 1] for i in range(0, len(parts) - 1, 2) if parts[i + 1]}


def decode_resource(message: Raw) -> dict[str, Any]:
    """The resource a message carries: ``data`` is base64 of a UTF-8 JSON object."""
    message_id = message_id_of(message)
    data = message.get("data")
    if not isinstance(data, str) or not data:
        raise _malformed(message_id, "no data")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(message_id, "data is not valid base64") from None
    try:
        resource = orjson.loads(decoded)
    except orjson.JSONDecodeError:
        raise _malformed(message_id, "data is not JSON") from None
    if not isinstance(resource, dict):
        raise _malformed(message_id, "data is not a JSON object")
    return resource


def pubsub_info(message: Raw) -> PubsubInfo:
    attributes = message.get("attributes")
    return PubsubInfo(
        message_id=message_id_of(message),
        publish_time=_str(message, "publishTime"),
        attributes={str(k): str(v) for k, v in attributes.items()}
        if isinstance(attributes, Mapping)
        else {},
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _Message:
    """One decoded message and what every event built from it shares."""

    def __init__(self, message: Raw, resource: dict[str, Any]) -> None:
        self.message = message
        self.resource = resource
        self.id = message_id_of(message)
        self.pubsub = pubsub_info(message)
        attributes = message.get("attributes")
        vendortype = (
            attributes.get(NOTIFICATION_TYPE_ATTRIBUTE) if isinstance(attributes, Mapping) else None
        )
        self.vendortype = vendortype if isinstance(vendortype, str) and vendortype else "unknown"
        self.time = _parse_time(self.pubsub.publish_time)

    def event(
        self,
        *,
        event_type: EventType,
        data: EventData,
        enterprise: str,
        device: str | None,
        suffix: str = "",
        time: datetime | None = None,
    ) -> CanonicalEvent:
        return make_event(
            id=self.id + suffix,
            vendor=Vendor.ANDROID,
            tenant=enterprise,
            type=event_type,
            vendortype=self.vendortype,
            partitionkey=android_key(enterprise, device),
            data=data,
            time=time or self.time,
            subject=device,
        )

    def unknown(self) -> CanonicalEvent:
        """Forwarded as ``mdm.unknown``: enterprise/device taken from any name it carries."""
        names: dict[str, str] = {}
        for field in ("name", "device", "enterprise"):
            names.update(parse_name(_str(self.resource, field)))
        return self.event(
            event_type=EventType.UNKNOWN,
            data=RawOnlyData(raw=self.resource, pubsub=self.pubsub),
            enterprise=names.get("enterprises", UNKNOWN_ENTERPRISE),
            device=names.get("devices"),
        )

    def device_ids(self, field: str) -> tuple[str, str]:
        names = parse_name(_str(self.resource, field))
        enterprise, device = names.get("enterprises"), names.get("devices")
        if not enterprise or not device:
            raise _schema(
                self.id, f"{self.vendortype}: {field} is not enterprises/{{e}}/devices/{{d}}"
            )
        return enterprise, device


def _enrollment(m: _Message) -> list[CanonicalEvent]:
    enterprise, device = m.device_ids("name")
    r = m.resource
    data = DeviceEnrolledData(
        raw=r,
        device_id=device,
        user_id=_str(r, "userName"),
        management_type=_str(r, "managementMode"),
        state=_str(r, "state"),
        policy_name=_str(r, "policyName"),
        enrollment_time=_str(r, "enrollmentTime"),
        pubsub=m.pubsub,
    )
    return [
        m.event(
            event_type=EventType.DEVICE_ENROLLED, data=data, enterprise=enterprise, device=device
        )
    ]


def _status_report(m: _Message) -> list[CanonicalEvent]:
    enterprise, device = m.device_ids("name")
    r = m.resource
    version = r.get("appliedPolicyVersion")
    data = DeviceStatusReportedData(
        raw=r,
        device_id=device,
        user_name=_str(r, "userName"),
        management_mode=_str(r, "managementMode"),
        state=_str(r, "state"),
        applied_state=_str(r, "appliedState"),
        policy_name=_str(r, "policyName"),
        applied_policy_name=_str(r, "appliedPolicyName"),
        applied_policy_version=None if version is None else str(version),
        last_status_report_time=_str(r, "lastStatusReportTime"),
        pubsub=m.pubsub,
    )
    return [
        m.event(
            event_type=EventType.DEVICE_STATUS_REPORTED,
            data=data,
            enterprise=enterprise,
            device=device,
        )
    ]


def _command(m: _Message) -> list[CanonicalEvent]:
    enterprise, device = m.device_ids("name")
    r = m.resource
    names = parse_name(_str(r, "name"))
    operation = names.get("operations")
    if not operation:
        raise _schema(m.id, "COMMAND: name is not enterprises/{e}/devices/{d}/operations/{op}")
    error = r.get("error")
    if error is not None and not isinstance(error, Mapping):
        raise _schema(m.id, "COMMAND: error is not an object")
    if error is None and r.get("done") is not True:
        return [m.unknown()]  # not finished: do not claim an outcome
    metadata = r.get("metadata")
    command_type = _str(metadata, "type") if isinstance(metadata, Mapping) else None
    code = error.get("code") if isinstance(error, Mapping) else None
    data = DeviceCommandData(
        raw=r,
        operation_name=str(r["name"]),
        operation_id=operation,
        device_id=device,
        command_type=command_type,
        done=r.get("done") is True,
        error=None
        if error is None
        else CommandError(
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            message=_str(error, "message"),
        ),
        pubsub=m.pubsub,
    )
    event_type = (
        EventType.DEVICE_COMMAND_FAILED if error is not None else EventType.DEVICE_COMMAND_COMPLETED
    )
    return [m.event(event_type=event_type, data=data, enterprise=enterprise, device=device)]


def _usage_logs(m: _Message) -> list[CanonicalEvent]:
    enterprise, device = m.device_ids("device")
    r = m.resource
    items = r.get("usageLogEvents")
    if items is None or items == []:
        return [m.unknown()]
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise _schema(m.id, "USAGE_LOGS: usageLogEvents is not a list of objects")
    events = []
    for index, item in enumerate(items):
        raw = {**r, "usageLogEvents": [item]}
        event_id = item.get("eventId")
        data = DeviceUsageLogData(
            raw=raw,
            device_id=device,
            user_name=_str(r, "user"),
            event_id=None if event_id is None else str(event_id),
            event_type=_str(item, "eventType"),
            event_time=_str(item, "eventTime"),
            event=dict(item),
            retrieval_time=_str(r, "retrievalTime"),
            item_index=index,
            item_count=len(items),
            pubsub=m.pubsub,
        )
        events.append(
            m.event(
                event_type=EventType.DEVICE_USAGE_LOGGED,
                data=data,
                enterprise=enterprise,
                device=device,
                suffix=f":{index}",
                time=_parse_time(_str(item, "eventTime")),
            )
        )
    return events


def _enterprise_upgrade(m: _Message) -> list[CanonicalEvent]:
    r = m.resource
    enterprise = parse_name(_str(r, "enterprise")).get("enterprises")
    if not enterprise:
        raise _schema(m.id, "ENTERPRISE_UPGRADE: enterprise is not enterprises/{e}")
    state = _str(r, "upgradeState")
    if state != UPGRADE_SUCCEEDED:
        return [m.unknown()]
    data = EnterpriseUpgradedData(
        raw=r, enterprise_id=enterprise, upgrade_state=state, pubsub=m.pubsub
    )
    return [
        m.event(
            event_type=EventType.ENTERPRISE_UPGRADED, data=data, enterprise=enterprise, device=None
        )
    ]


def _unknown(m: _Message) -> list[CanonicalEvent]:
    return [m.unknown()]


_MAPPERS: dict[str, Callable[[_Message], list[CanonicalEvent]]] = {
    "ENROLLMENT": _enrollment,
    "STATUS_REPORT": _status_report,
    "COMMAND": _command,
    "USAGE_LOGS": _usage_logs,
    "ENTERPRISE_UPGRADE": _enterprise_upgrade,
}

#: Every notificationType mapped to a specific canonical type.
KNOWN_TYPES = frozenset(_MAPPERS)


def normalize_message(message: Any) -> list[CanonicalEvent]:
    """Map one Pub/Sub message (``ReceivedMessage.message``) to its canonical events (>= 1).

    Raises :class:`NormalizationError` naming the message id when it cannot be decoded or mapped.
    """
    if not isinstance(message, Mapping):
        raise NormalizationError(RejectReason.MALFORMED.value, "pubsub message is not an object")
    message_id = message_id_of(message)
    if message_id == "?":
        raise _malformed(message_id, "no messageId")
    m = _Message(message, decode_resource(message))
    mapper = _MAPPERS.get(m.vendortype, _unknown)
    try:
        return mapper(m)
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        raise _schema(message_id, f"{m.vendortype}: {exc}") from exc
