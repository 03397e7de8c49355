"""Apple's wire shapes (camelCase, as documented), validated before normalization.

Unknown extra keys are accepted (Apple adds fields without notice); missing or mistyped documented
keys are schema violations. Sources: ../shared/VENDOR_NOTES.md section 1.12 and the seed
"Subscribing to Notifications".

Length limits (documented in docs/apple.md) bound what one input can make the broker hold, e.g. in
the dedupe window: Apple's ids are UUIDs (36 characters) and digit strings (16), so the limits
leave ample room. A longer id is a schema violation (dead-lettered).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


MAX_NOTIFICATION_ID_LENGTH = 128
MAX_UID_LENGTH = 64
MAX_TYPE_LENGTH = 64
MAX_EVENT_ID_LENGTH = 128
MAX_ENTITY_ID_LENGTH = 256
"""adamId, pricingParam, serialNumber, clientUserId, email, idHash, inviteCode."""


class NotificationEnvelope(_Wire):
    """Every notification: ``{notification, notificationId, notificationType, uId}``."""

    notification: dict[str, Any]
    notification_id: StrictStr = Field(
        alias="notificationId", min_length=1, max_length=MAX_NOTIFICATION_ID_LENGTH
    )
    notification_type: StrictStr = Field(
        alias="notificationType", min_length=1, max_length=MAX_TYPE_LENGTH
    )
    uid: StrictStr = Field(alias="uId", min_length=1, max_length=MAX_UID_LENGTH)


class ErrorResponse(_Wire):
    """``{errorNumber, errorMessage, errorInfo?}``: sync API failures and async failures."""

    error_number: StrictInt | None = Field(default=None, alias="errorNumber")
    error_message: StrictStr | None = Field(default=None, alias="errorMessage")
    error_info: dict[str, Any] | None = Field(default=None, alias="errorInfo")


def _entity(alias: str | None = None) -> Any:
    return Field(default=None, alias=alias, max_length=MAX_ENTITY_ID_LENGTH)


class WireAssignment(_Wire):
    adam_id: StrictStr = Field(alias="adamId", max_length=MAX_ENTITY_ID_LENGTH)
    pricing_param: StrictStr | None = _entity("pricingParam")
    serial_number: StrictStr | None = _entity("serialNumber")
    client_user_id: StrictStr | None = _entity("clientUserId")


class WireUser(_Wire):
    client_user_id: StrictStr | None = _entity("clientUserId")
    email: StrictStr | None = _entity()
    id_hash: StrictStr | None = _entity("idHash")
    invite_code: StrictStr | None = _entity("inviteCode")
    managed_apple_id: StrictStr | None = _entity("managedAppleId")
    status: StrictStr | None = _entity()


class AssetCountBody(_Wire):
    adam_id: StrictStr = Field(alias="adamId", max_length=MAX_ENTITY_ID_LENGTH)
    count_delta: StrictInt = Field(alias="countDelta")
    pricing_param: StrictStr | None = _entity("pricingParam")


class AssetManagementBody(_Wire):
    """``result`` is SUCCESS or FAILURE as documented; other values are kept (mdm.unknown)."""

    type: StrictStr = Field(max_length=MAX_TYPE_LENGTH)
    event_id: StrictStr | None = Field(
        default=None, alias="eventId", max_length=MAX_EVENT_ID_LENGTH
    )
    result: StrictStr | None = Field(default=None, max_length=MAX_TYPE_LENGTH)
    assignments: list[WireAssignment] = Field(default_factory=list)
    error: ErrorResponse | None = None


class UserManagementBody(_Wire):
    type: StrictStr = Field(max_length=MAX_TYPE_LENGTH)
    event_id: StrictStr | None = Field(
        default=None, alias="eventId", max_length=MAX_EVENT_ID_LENGTH
    )
    result: StrictStr | None = Field(default=None, max_length=MAX_TYPE_LENGTH)
    users: list[WireUser] = Field(default_factory=list)
    error: ErrorResponse | None = None


class UserAssociatedBody(_Wire):
    associated_users: list[WireUser] = Field(alias="associatedUsers")


class StatusResponse(_Wire):
    """``GET /status?eventId=``: progress and outcome of one async event."""

    event_status: StrictStr = Field(alias="eventStatus")
    event_type: StrictStr | None = Field(default=None, alias="eventType")
    num_completed: StrictInt | None = Field(default=None, alias="numCompleted")
    num_requested: StrictInt | None = Field(default=None, alias="numRequested")
    failures: list[ErrorResponse] = Field(default_factory=list)
    uid: StrictStr | None = Field(default=None, alias="uId")
