"""Apple's wire shapes (camelCase, as documented), validated before normalization.

Unknown extra keys are accepted (Apple adds fields without notice); missing or mistyped documented
keys are schema violations. Sources: ../shared/VENDOR_NOTES.md section 1.12 and the seed
"Subscribing to Notifications".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class NotificationEnvelope(_Wire):
    """Every notification: ``{notification, notificationId, notificationType, uId}``."""

    notification: dict[str, Any]
    notification_id: StrictStr = Field(alias="notificationId", min_length=1)
    notification_type: StrictStr = Field(alias="notificationType", min_length=1)
    uid: StrictStr = Field(alias="uId", min_length=1)


class ErrorResponse(_Wire):
    """``{errorNumber, errorMessage, errorInfo?}``: sync API failures and async failures."""

    error_number: StrictInt | None = Field(default=None, alias="errorNumber")
    error_message: StrictStr | None = Field(default=None, alias="errorMessage")
    error_info: dict[str, Any] | None = Field(default=None, alias="errorInfo")


class WireAssignment(_Wire):
    adam_id: StrictStr = Field(alias="adamId")
    pricing_param: StrictStr | None = Field(default=None, alias="pricingParam")
    serial_number: StrictStr | None = Field(default=None, alias="serialNumber")
    client_user_id: StrictStr | None = Field(default=None, alias="clientUserId")


class WireUser(_Wire):
    client_user_id: StrictStr | None = Field(default=None, alias="clientUserId")
    email: StrictStr | None = None
    id_hash: StrictStr | None = Field(default=None, alias="idHash")
    invite_code: StrictStr | None = Field(default=None, alias="inviteCode")
    managed_apple_id: StrictStr | None = Field(default=None, alias="managedAppleId")
    status: StrictStr | None = None


class AssetCountBody(_Wire):
    adam_id: StrictStr = Field(alias="adamId")
    count_delta: StrictInt = Field(alias="countDelta")
    pricing_param: StrictStr | None = Field(default=None, alias="pricingParam")


class AssetManagementBody(_Wire):
    type: StrictStr
    event_id: StrictStr | None = Field(default=None, alias="eventId")
    result: StrictStr | None = None
    assignments: list[WireAssignment] = Field(default_factory=list)
    error: ErrorResponse | None = None


class UserManagementBody(_Wire):
    type: StrictStr
    event_id: StrictStr | None = Field(default=None, alias="eventId")
    result: StrictStr | None = None
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
