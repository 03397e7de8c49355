"""The canonical event: the contract every downstream consumer depends on.

One Kafka record per vendor notification. The value is a CloudEvents 1.0 *structured mode* JSON
document; the record carries the header ``content-type: application/cloudevents+json`` and its key is
the event's ``partitionkey`` extension (DESIGN.md section 3).

Guarantees:

* ``id`` is deterministic (never random): a redelivered vendor notification maps to the same id, so
  (``source``, ``id``) is the idempotency key downstream.
* ``partitionkey`` is deterministic from content: duplicates land in the same partition as the
  original, and one entity's events (Apple location, Android device/product, Kapua device) keep
  their relative order.
* ``data`` holds the canonical fields of the event's type plus ``raw``: the vendor notification
  exactly as received, so events can be re-mapped later without loss. When the producer hands
  :func:`make_event` the vendor's bytes (``raw_json``), :func:`encode_event` splices those bytes
  into the record unchanged (``orjson.Fragment``): integers beyond 64 bits, ``1.10`` and key order
  reach Kafka exactly as the vendor sent them, and ``raw`` is never re-encoded.
* An event published under a derived id because its vendor id was reused for different content
  carries the extension ``idcollision`` naming the vendor's original id (see
  :mod:`broker.idwindow`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_serializer,
)

from broker.errors import BrokerError

CONTENT_TYPE = "application/cloudevents+json"
KAFKA_HEADERS: list[tuple[str, bytes]] = [("content-type", CONTENT_TYPE.encode())]


class Vendor(StrEnum):
    APPLE = "apple"
    ANDROID = "android"
    KAPUA = "kapua"


class EventType(StrEnum):
    """The canonical taxonomy (``type`` attribute). Unknown vendor types map to ``UNKNOWN``."""

    ASSET_COUNT_CHANGED = "mdm.asset.count_changed"
    ASSIGNMENT_ASSOCIATED = "mdm.assignment.associated"
    ASSIGNMENT_DISASSOCIATED = "mdm.assignment.disassociated"
    ASSIGNMENT_REVOKED = "mdm.assignment.revoked"
    ASSIGNMENT_FAILED = "mdm.assignment.failed"
    USER_CREATED = "mdm.user.created"
    USER_UPDATED = "mdm.user.updated"
    USER_RETIRED = "mdm.user.retired"
    USER_FAILED = "mdm.user.failed"
    USER_ASSOCIATED = "mdm.user.associated"
    APPLE_EVENT_STATUS = "mdm.apple.event_status"
    ASSIGNMENT_SYNCED = "mdm.assignment.synced"
    USER_SYNCED = "mdm.user.synced"
    ASSET_COUNTS_SYNCED = "mdm.asset.counts_synced"
    APP_APPROVAL_CHANGED = "mdm.app.approval_changed"
    APP_INSTALL_FAILED = "mdm.app.install_failed"
    APP_UPDATED = "mdm.app.updated"
    APP_PERMISSIONS_CHANGED = "mdm.app.permissions_changed"
    APP_CONFIG_SCHEMA_CHANGED = "mdm.app.config_schema_changed"
    APP_AVAILABILITY_CHANGED = "mdm.app.availability_changed"
    DEVICE_ENROLLED = "mdm.device.enrolled"
    DEVICE_REPORT_UPDATED = "mdm.device.report_updated"
    DEVICE_STATUS_REPORTED = "mdm.device.status_reported"
    DEVICE_COMMAND_COMPLETED = "mdm.device.command_completed"
    DEVICE_COMMAND_FAILED = "mdm.device.command_failed"
    DEVICE_USAGE_LOGGED = "mdm.device.usage_logged"
    ENTERPRISE_UPGRADED = "mdm.enterprise.upgraded"
    OPERATION_PROGRESSED = "mdm.operation.progressed"
    OPERATION_COMPLETED = "mdm.operation.completed"
    OPERATION_FAILED = "mdm.operation.failed"
    OPERATION_STALE = "mdm.operation.stale"
    OPERATION_VANISHED = "mdm.operation.vanished"
    TEST = "mdm.test"
    UNKNOWN = "mdm.unknown"


# --------------------------------------------------------------------------------------------
# `data` models, one per canonical type. Field names are snake_case; `raw` is always the vendor
# notification exactly as received.
# --------------------------------------------------------------------------------------------


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: dict[str, Any] = Field(description="The vendor notification exactly as received.")


class PubsubInfo(BaseModel):
    """Where an Android Management API notification came from: its Cloud Pub/Sub message.

    The same on every redelivery of the message (``deliveryAttempt`` is deliberately left out).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str = Field(description="Pub/Sub messageId: stable across redeliveries")
    publish_time: str | None = Field(default=None, description="RFC 3339, as Pub/Sub gave it")
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Message attributes (AMAPI sets `notificationType`)"
    )


class _WithAmapiFields(_Data):
    """A model shared by EMM and AMAPI events: the AMAPI-only fields are left out when unset,
    so events of other sources keep exactly the `data` they had before AMAPI existed."""

    _amapi_only: ClassVar[tuple[str, ...]] = ()

    # No return annotation on purpose: with one, pydantic would publish that type as the model's
    # serialization JSON Schema instead of the fields.
    @model_serializer(mode="wrap")
    def _drop_unset_amapi_fields(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        if isinstance(data, dict):
            for name in self._amapi_only:
                if data.get(name) is None:
                    data.pop(name, None)
        return data


class RawOnlyData(_WithAmapiFields):
    """`mdm.test` and `mdm.unknown`: nothing canonical to extract; `raw` carries everything.

    For an AMAPI notification of a type the broker does not map, `pubsub` names its message.
    """

    _amapi_only: ClassVar[tuple[str, ...]] = ("pubsub",)

    pubsub: PubsubInfo | None = None


class VendorErrorInfo(BaseModel):
    """An Apple ErrorResponse (`errorNumber`, `errorMessage`, optional `errorInfo`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_number: int | None = None
    error_message: str | None = None
    error_info: dict[str, Any] | None = None


class AssetCountChangedData(_Data):
    """Apple ASSET_COUNT: licences bought, transferred or refunded. Apply deltas once per id."""

    adam_id: str
    pricing_param: str | None = None
    count_delta: int


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adam_id: str
    pricing_param: str | None = None
    serial_number: str | None = None
    client_user_id: str | None = None


class AssignmentData(_Data):
    """Apple ASSET_MANAGEMENT (associate / disassociate / revoke); at most 100 assignments each."""

    event_id: str | None = None
    result: str | None = Field(default=None, description="SUCCESS or FAILURE")
    assignments: list[Assignment] = Field(default_factory=list)
    error: VendorErrorInfo | None = None


class AssignmentFailedData(_Data):
    """Apple ASSET_MANAGEMENT whose ``result`` is FAILURE, or a tracked associate / disassociate /
    revoke whose polled event status is FAILED. Nothing was assigned: never install on it."""

    action: str = Field(description="ASSOCIATE, DISASSOCIATE or REVOKE (Apple's `type`)")
    result: str = Field(description="FAILURE (notification) or FAILED (polled event status)")
    error: VendorErrorInfo | None = Field(
        default=None, description="Apple's ErrorResponse: one per notification, may cover many"
    )
    event_id: str | None = None
    assignments: list[Assignment] = Field(
        default_factory=list, description="The assignments that were attempted"
    )


class AppleUser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_user_id: str | None = None
    email: str | None = None
    id_hash: str | None = None
    invite_code: str | None = None
    managed_apple_id: str | None = None
    status: str | None = None


class UserData(_Data):
    """Apple USER_MANAGEMENT (create / update / retire)."""

    event_id: str | None = None
    result: str | None = Field(default=None, description="SUCCESS or FAILURE")
    users: list[AppleUser] = Field(default_factory=list)
    error: VendorErrorInfo | None = None


class UserFailedData(_Data):
    """Apple USER_MANAGEMENT whose ``result`` is FAILURE, or a tracked create / update / retire
    whose polled event status is FAILED. The users' state did not change."""

    action: str = Field(description="CREATE, UPDATE or RETIRE (Apple's `type`)")
    result: str = Field(description="FAILURE (notification) or FAILED (polled event status)")
    error: VendorErrorInfo | None = None
    event_id: str | None = None
    users: list[AppleUser] = Field(
        default_factory=list, description="The users the request was about"
    )


class UserAssociatedData(_Data):
    """Apple USER_ASSOCIATED: users accepted their invitation."""

    users: list[AppleUser] = Field(default_factory=list)


class AppleEventStatusData(_Data):
    """Outcome of an Apple async event learnt by polling `/mdm/v2/status` (reconciliation)."""

    event_id: str
    event_status: str = Field(description="PENDING, COMPLETE or FAILED")
    event_type: str | None = Field(default=None, description="ASSOCIATE, DISASSOCIATE, ...")
    num_completed: int | None = None
    num_requested: int | None = None
    failures: list[VendorErrorInfo] = Field(default_factory=list)


class SyncInfo(BaseModel):
    """Why and when an Apple sync read a record (not part of the event id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Literal["gap", "restart", "initial", "safety_net", "version_reset", "manual"] = Field(
        description="gap: non-2xx answers to Apple; restart: no broker was running; initial: "
        "first sync of the location; safety_net: periodic; version_reset: Apple refused the "
        "stored sinceVersionId (9721) so the whole data set was read; manual: operator"
    )
    version_id: str | None = Field(
        default=None, description="The `versionId` of the first page of the read"
    )
    since_version_id: str | None = Field(
        default=None, description="The `sinceVersionId` sent (absent: the whole data set)"
    )
    started: datetime = Field(description="When the sync run started (UTC)")

    @field_serializer("started")
    def _ser_started(self, value: datetime) -> str:
        return format_time(value)


class _SyncedData(_Data):
    raw: dict[str, Any] = Field(description="The record exactly as Apple's Get API returned it.")
    sync: SyncInfo


class AssignmentSyncedData(_SyncedData):
    """An assignment that exists now (Get Assignments). Absent from a sync does NOT mean removed:
    Apple's ``sinceVersionId`` read lists changed records that exist."""

    adam_id: str
    pricing_param: str | None = None
    serial_number: str | None = None
    client_user_id: str | None = None


class UserSyncedData(_SyncedData):
    """A user's current state (Get Users): supersedes earlier user events of that clientUserId."""

    client_user_id: str
    status: str | None = None
    email: str | None = None
    id_hash: str | None = None
    invite_code: str | None = None
    managed_apple_id: str | None = None


class AssetCountsSyncedData(_SyncedData):
    """An asset's absolute licence counts (Get Assets): supersedes earlier `count_delta` values."""

    adam_id: str
    pricing_param: str | None = None
    product_type: str | None = None
    assigned_count: int | None = None
    available_count: int | None = None
    retired_count: int | None = None
    total_count: int | None = None


class AppApprovalChangedData(_Data):
    """Android productApproval."""

    product_id: str
    approved: str | None = Field(default=None, description="approved, unapproved or unknown")


class AppInstallFailedData(_Data):
    """Android installFailure."""

    product_id: str
    device_id: str | None = None
    user_id: str | None = None
    failure_reason: str | None = None
    failure_details: str | None = None


class AppProductData(_Data):
    """Android appUpdate and appRestricionsSchemaChange (sic): only the product changed."""

    product_id: str


class AppPermissionsChangedData(_Data):
    """Android newPermissions."""

    product_id: str
    requested_permissions: list[str] = Field(default_factory=list)
    approved_permissions: list[str] = Field(default_factory=list)


class AppAvailabilityChangedData(_Data):
    """Android productAvailabilityChange."""

    product_id: str
    availability_status: str | None = None


class DeviceEnrolledData(_WithAmapiFields):
    """Android EMM newDevice, or AMAPI ENROLLMENT (a Device resource; `pubsub` set)."""

    _amapi_only: ClassVar[tuple[str, ...]] = ("state", "policy_name", "enrollment_time", "pubsub")

    device_id: str
    user_id: str | None = None
    management_type: str | None = Field(
        default=None, description="EMM managementType, or AMAPI managementMode"
    )
    dpc_package_name: str | None = None
    state: str | None = Field(default=None, description="AMAPI Device.state, e.g. ACTIVE")
    policy_name: str | None = Field(default=None, description="AMAPI Device.policyName")
    enrollment_time: str | None = Field(default=None, description="AMAPI, RFC 3339 as given")
    pubsub: PubsubInfo | None = None


class AppState(BaseModel):
    """One app's keyed state from an Android device report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: str | None = None
    keyed_app_state: list[dict[str, Any]] = Field(default_factory=list)


class DeviceReportUpdatedData(_Data):
    """Android deviceReportUpdate with its keyed app states."""

    device_id: str
    user_id: str | None = None
    last_updated_timestamp_millis: int | None = None
    app_states: list[AppState] = Field(default_factory=list)


class DeviceStatusReportedData(_Data):
    """AMAPI STATUS_REPORT: the Device resource after a status report (the full resource is `raw`)."""

    device_id: str
    user_name: str | None = None
    management_mode: str | None = None
    state: str | None = None
    applied_state: str | None = None
    policy_name: str | None = None
    applied_policy_name: str | None = None
    applied_policy_version: str | None = None
    last_status_report_time: str | None = Field(default=None, description="RFC 3339 as given")
    pubsub: PubsubInfo


class CommandError(BaseModel):
    """A google.rpc.Status carried by a failed AMAPI Operation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: int | None = None
    message: str | None = None


class DeviceCommandData(_Data):
    """AMAPI COMMAND: the Operation of a device command that finished (failed when `error`)."""

    operation_name: str = Field(description="enterprises/{e}/devices/{d}/operations/{op}")
    operation_id: str
    device_id: str
    command_type: str | None = Field(default=None, description="metadata.type, e.g. LOCK")
    done: bool
    error: CommandError | None = None
    pubsub: PubsubInfo


class DeviceUsageLogData(_Data):
    """AMAPI USAGE_LOGS: ONE usage-log event of a BatchUsageLogEvents message.

    A batch of N usage-log events becomes N canonical events with ids `{messageId}:{item_index}`.
    `raw` is the batch with `usageLogEvents` narrowed to this item (the siblings share
    `pubsub.message_id`), so a batch costs O(N) bytes in Kafka, not O(N^2).
    """

    device_id: str
    user_name: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    event_time: str | None = Field(default=None, description="RFC 3339 as given")
    event: dict[str, Any] = Field(
        default_factory=dict, description="The usage-log event exactly as received"
    )
    retrieval_time: str | None = None
    item_index: int = Field(ge=0)
    item_count: int = Field(ge=1)
    pubsub: PubsubInfo


class EnterpriseUpgradedData(_Data):
    """AMAPI ENTERPRISE_UPGRADE with upgradeState UPGRADE_STATE_SUCCEEDED."""

    enterprise_id: str
    upgrade_state: str
    pubsub: PubsubInfo


class OperationData(_Data):
    """Kapua device-management operation: a progress notification or how the operation ended.

    `raw` is the notification row (progress) or the operation record (completed, failed, stale);
    for `mdm.operation.vanished` it is Kapua's 404 answer (ExceptionInfo, `{}` when empty).
    """

    operation_id: str = Field(description="The operation entity `id` (path segment in Kapua's API)")
    device_id: str
    device_operation_id: str | None = Field(
        default=None, description="The operation's `operationId` field, echoed by the device"
    )
    status: str = Field(
        description="RUNNING, COMPLETED, FAILED or STALE; VANISHED for an operation deleted while "
        "watched"
    )
    progress: int | None = None
    resource: str | None = None
    message: str | None = None
    log: str | None = Field(default=None, description="The operation log, on terminal events")
    notification_id: str | None = None
    ended_on: datetime | None = None
    observed_via: Literal["notification", "operation"] = "notification"
    terminal_row: dict[str, Any] | None = Field(
        default=None,
        description="Terminal events: the COMPLETED/FAILED notification row exactly as received, "
        "when the broker saw it before Kapua deleted it",
    )
    last_status: str | None = Field(
        default=None,
        description="mdm.operation.vanished: the status last seen (on the operation record, else "
        "on its newest notification row; null if neither was seen)",
    )

    @field_serializer("ended_on")
    def _ser_ended_on(self, value: datetime | None) -> str | None:
        return None if value is None else format_time(value)


DATA_MODELS: dict[EventType, type[_Data]] = {
    EventType.ASSET_COUNT_CHANGED: AssetCountChangedData,
    EventType.ASSIGNMENT_ASSOCIATED: AssignmentData,
    EventType.ASSIGNMENT_DISASSOCIATED: AssignmentData,
    EventType.ASSIGNMENT_REVOKED: AssignmentData,
    EventType.ASSIGNMENT_FAILED: AssignmentFailedData,
    EventType.USER_CREATED: UserData,
    EventType.USER_UPDATED: UserData,
    EventType.USER_RETIRED: UserData,
    EventType.USER_FAILED: UserFailedData,
    EventType.USER_ASSOCIATED: UserAssociatedData,
    EventType.APPLE_EVENT_STATUS: AppleEventStatusData,
    EventType.ASSIGNMENT_SYNCED: AssignmentSyncedData,
    EventType.USER_SYNCED: UserSyncedData,
    EventType.ASSET_COUNTS_SYNCED: AssetCountsSyncedData,
    EventType.APP_APPROVAL_CHANGED: AppApprovalChangedData,
    EventType.APP_INSTALL_FAILED: AppInstallFailedData,
    EventType.APP_UPDATED: AppProductData,
    EventType.APP_PERMISSIONS_CHANGED: AppPermissionsChangedData,
    EventType.APP_CONFIG_SCHEMA_CHANGED: AppProductData,
    EventType.APP_AVAILABILITY_CHANGED: AppAvailabilityChangedData,
    EventType.DEVICE_ENROLLED: DeviceEnrolledData,
    EventType.DEVICE_REPORT_UPDATED: DeviceReportUpdatedData,
    EventType.DEVICE_STATUS_REPORTED: DeviceStatusReportedData,
    EventType.DEVICE_COMMAND_COMPLETED: DeviceCommandData,
    EventType.DEVICE_COMMAND_FAILED: DeviceCommandData,
    EventType.DEVICE_USAGE_LOGGED: DeviceUsageLogData,
    EventType.ENTERPRISE_UPGRADED: EnterpriseUpgradedData,
    EventType.OPERATION_PROGRESSED: OperationData,
    EventType.OPERATION_COMPLETED: OperationData,
    EventType.OPERATION_FAILED: OperationData,
    EventType.OPERATION_STALE: OperationData,
    EventType.OPERATION_VANISHED: OperationData,
    EventType.TEST: RawOnlyData,
    EventType.UNKNOWN: RawOnlyData,
}

EventData = _Data


# --------------------------------------------------------------------------------------------
# The envelope
# --------------------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z`` suffix (naive means UTC).

    orjson's datetime encoding (``"YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"``) cut at the
    milliseconds: the same text as ``isoformat(timespec="milliseconds")`` (tested on random
    dates) at about a third of its cost, on the publish path where every event's time is
    formatted.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    text = orjson.dumps(value)  # microseconds are left out when they are 0
    if value.microsecond:
        return text[1:24].decode() + "Z"
    return text[1:20].decode() + ".000Z"


class CanonicalEvent(BaseModel):
    """A CloudEvents 1.0 event in the broker's canonical form.

    Build it with :func:`make_event`, which validates ``data`` against the type's model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, description="Deterministic; see DESIGN.md section 3")
    source: str = Field(
        min_length=1,
        description="/apple/locations/{uId}, /android/enterprises/{id}, /kapua/scopes/{scopeId}",
    )
    type: EventType
    subject: str | None = None
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    vendor: Vendor
    tenant: str = Field(min_length=1)
    vendortype: str = Field(description="The vendor's own type string, unchanged")
    partitionkey: str = Field(min_length=1, description="Also the Kafka record key")
    idcollision: str | None = Field(
        default=None,
        description="Set when the vendor reused an id for different content: the vendor's "
        "original id (this event's `id` is then `{original}~{16 hex of SHA-256 of the body}`)",
    )
    data: dict[str, Any]

    @field_serializer("time")
    def _ser_time(self, value: datetime) -> str:
        return format_time(value)

    @property
    def raw_json(self) -> bytes | None:
        """The vendor's bytes that :func:`encode_event` splices in as ``data.raw`` (producer side;
        None on decoded events and on events built from parsed values only)."""
        # read the private dict directly: ``self._raw_json`` goes through pydantic's
        # ``__getattr__``, which was 10% of the publish path in a profile. Only
        # :class:`_EventWithRawJson` has private attributes: on the others it is None.
        private = self.__pydantic_private__
        return None if private is None else private.get("_raw_json")

    def with_collision_id(self, new_id: str) -> CanonicalEvent:
        """This event under ``new_id``, flagged with ``idcollision`` = the current id."""
        return self.model_copy(update={"id": new_id, "idcollision": self.id})

    @property
    def idempotency_key(self) -> tuple[str, str]:
        """(``source``, ``id``): equal for duplicates, as the CloudEvents spec defines them."""
        return (self.source, self.id)

    def typed_data(self) -> _Data:
        """``data`` parsed into the model of this event's type (raises on a contract violation)."""
        return DATA_MODELS[self.type].model_validate(self.data)


class _EventWithRawJson(CanonicalEvent):
    """A :class:`CanonicalEvent` that carries the vendor's bytes (publish side only).

    The bytes are a pydantic private attribute here and not on :class:`CanonicalEvent`:
    a model with private attributes runs pydantic's private-attribute initialisation on every
    validation, ~20 % of :func:`decode_event` on the consumer side, which never has the bytes.
    """

    _raw_json: bytes | None = PrivateAttr(default=None)


def make_event(
    *,
    id: str,
    vendor: Vendor,
    tenant: str,
    type: EventType,
    vendortype: str,
    partitionkey: str,
    data: _Data,
    time: datetime | None = None,
    subject: str | None = None,
    raw_json: bytes | None = None,
) -> CanonicalEvent:
    """Build a canonical event. ``time`` defaults to now (receipt time) when the vendor gives none.

    ``raw_json``: the vendor's bytes that ``data.raw`` was parsed from. When given, ``data.raw``
    is neither copied nor re-serialized here, and :func:`encode_event` writes these bytes
    unchanged (the caller guarantees they are one valid JSON value, as parsed).

    Raises :class:`TypeError` when ``data`` is not the model registered for ``type``.
    """
    expected = DATA_MODELS[type]
    if not isinstance(data, expected):
        raise TypeError(f"{type} needs {expected.__name__}, got {type_name(data)}")
    if raw_json is None:
        fields = data.model_dump(mode="json")
        raw = fields.pop("raw")
    else:
        raw = data.raw
        fields = data.model_dump(mode="json", exclude={"raw"})
    return make_event_from_fields(
        id=id,
        vendor=vendor,
        tenant=tenant,
        type=type,
        vendortype=vendortype,
        partitionkey=partitionkey,
        raw=raw,
        fields=fields,
        time=time,
        subject=subject,
        raw_json=raw_json,
    )


def make_event_from_fields(
    *,
    id: str,
    vendor: Vendor,
    tenant: str,
    type: EventType,
    vendortype: str,
    partitionkey: str,
    raw: Any,
    fields: dict[str, Any],
    time: datetime | None = None,
    subject: str | None = None,
    raw_json: bytes | None = None,
) -> CanonicalEvent:
    """:func:`make_event` for a caller that holds ``type``'s canonical fields in their JSON form
    already: ``data`` becomes ``{"raw": raw, **fields}`` without building the data model.

    For hot paths that validated their input once against their own wire models (the Apple
    webhook): ``fields`` must be exactly what ``model_dump(mode="json")`` of ``type``'s model
    gives (every field, in declaration order, ``raw`` left out), which the caller's tests prove
    per type (``DATA_MODELS[type].model_validate(event.data)`` dumps back to ``event.data``).
    ``raw`` and ``raw_json`` as in :func:`make_event`.
    """
    model = CanonicalEvent if raw_json is None else _EventWithRawJson
    event = model(
        id=id,
        source=source_for(vendor, tenant),
        type=type,
        subject=subject,
        time=time or datetime.now(UTC),
        vendor=vendor,
        tenant=tenant,
        vendortype=vendortype,
        partitionkey=partitionkey,
        data={"raw": raw, **fields},
    )
    if isinstance(event, _EventWithRawJson):
        event._raw_json = raw_json
    return event


def type_name(value: object) -> str:
    return type(value).__name__


_SOURCE_PATTERNS = {
    Vendor.APPLE: "/apple/locations/{}",
    Vendor.ANDROID: "/android/enterprises/{}",
    Vendor.KAPUA: "/kapua/scopes/{}",
}


def source_for(vendor: Vendor, tenant: str) -> str:
    """The CloudEvents ``source`` of a vendor tenant (Apple uId, Android enterprise, Kapua scope)."""
    return _SOURCE_PATTERNS[vendor].format(tenant)


# --------------------------------------------------------------------------------------------
# Id and key rules (DESIGN.md section 3)
# --------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace. Equal values give equal bytes.

    Integers beyond 64 bits (valid JSON, rejected by orjson) fall back to the standard library.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode()


def android_event_id(
    enterprise_id: str, notification_type: str, timestamp_millis: str | int, body: Any
) -> str:
    """Stable id for an EMM notification (which has none): SHA-256 over its identifying content.

    ``body`` is the event object (e.g. ``installFailureEvent``) or the whole notification; a
    redelivery carries the same content and therefore gets the same id.
    """
    digest = hashlib.sha256()
    for part in (enterprise_id, notification_type, str(timestamp_millis)):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(canonical_json(body))
    return digest.hexdigest()[:32]


KAPUA_OUTCOMES = ("COMPLETED", "FAILED", "STALE", "VANISHED")
KAPUA_STATUS_ID_MAX = 64


def kapua_terminal_id(operation_entity_id: str, status: str) -> str:
    """Id of how an operation ended: ``{operation id}:{COMPLETED|FAILED|STALE|VANISHED}``.

    The same whether the end was seen as a notification row or on the operation record, so the
    two paths dedupe to one event.
    """
    normalized = status.upper()
    if normalized not in KAPUA_OUTCOMES:
        raise ValueError(f"not a terminal Kapua outcome: {status!r}")
    return f"{operation_entity_id}:{normalized}"


def kapua_unknown_status_id(operation_entity_id: str, status: str) -> str:
    """Id of the ``mdm.unknown`` event of an operation record in a status the broker does not
    know: ``{operation id}:{status}`` (status as sent, at most 64 characters)."""
    if not status or status.upper() in KAPUA_OUTCOMES or status.upper() == "RUNNING":
        raise ValueError(f"not an unknown Kapua status: {status!r}")
    return f"{operation_entity_id}:{status[:KAPUA_STATUS_ID_MAX]}"


def apple_key(uid: str) -> str:
    return f"apple:{uid}"


def android_key(enterprise_id: str, entity_id: str | None) -> str:
    """Per device (or product, when no device is involved) within an enterprise."""
    return f"android:{enterprise_id}:{entity_id or '-'}"


def kapua_key(scope_id: str, device_id: str) -> str:
    return f"kapua:{scope_id}:{device_id}"


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


class EventDecodeError(BrokerError):
    """A Kafka record value is not a canonical event (bad JSON or contract violation)."""


_ATTRIBUTES = tuple(name for name in CanonicalEvent.model_fields if name != "data")
"""The envelope's attributes in the model's order (the order pydantic would dump them in)."""


def encode_event(event: CanonicalEvent) -> bytes:
    """CloudEvents structured-mode JSON (UTF-8), attributes at top level, ``data`` as an object.

    With :attr:`CanonicalEvent.raw_json` set, ``data.raw`` is those bytes, spliced in unchanged.
    """
    # The document is built from the attributes directly (unset ones left out, ``time`` in its
    # RFC 3339 form, enums are str): the bytes of pydantic's JSON mode at a fraction of the cost
    # of a model_dump per event (tests/unit/core/test_events.py compares them for every type).
    doc: dict[str, Any] = {}
    for name in _ATTRIBUTES:
        value = getattr(event, name)
        if value is not None:
            doc[name] = value
    doc["time"] = format_time(event.time)
    raw_json = event.raw_json
    if raw_json is None:
        doc["data"] = event.data
    else:
        data = dict(event.data)
        data["raw"] = orjson.Fragment(raw_json)
        doc["data"] = data
    try:
        return orjson.dumps(doc)
    except TypeError:  # a hand-built event with non-JSON values in ``data``: pydantic converts
        return _encode_json_mode(event)


def _encode_json_mode(event: CanonicalEvent) -> bytes:
    raw_json = event.raw_json
    if raw_json is None:
        return orjson.dumps(event.model_dump(mode="json", exclude_none=True))
    doc = event.model_dump(mode="json", exclude_none=True, exclude={"data"})
    data = event.model_dump(mode="json", include={"data"})["data"]
    data["raw"] = orjson.Fragment(raw_json)
    doc["data"] = data
    return orjson.dumps(doc)


#: ``CanonicalEvent.model_validate`` without its keyword-argument forwarding (~0.5 us of a
#: ~5 us decode; the consumer decodes every event it hands to a handler).
_validate_event = CanonicalEvent.__pydantic_validator__.validate_python


def decode_event(value: bytes | str) -> CanonicalEvent:
    """Parse a record value produced by :func:`encode_event`; raises :class:`EventDecodeError`."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if type(doc) is not dict:  # orjson gives a dict for an object (isinstance of an ABC is slow)
        raise EventDecodeError("a canonical event is a JSON object")
    try:
        event: CanonicalEvent = _validate_event(doc)
    except ValidationError as exc:
        raise EventDecodeError(f"not a canonical event: {exc}") from exc
    return event
