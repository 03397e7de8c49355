"""Apple's wire shapes (camelCase, as documented), validated before normalization.

Unknown extra keys are accepted (Apple adds fields without notice); missing or mistyped documented
keys are schema violations. Sources: ../shared/VENDOR_NOTES.md section 1.12 and the seed
"Subscribing to Notifications".

The entries of a notification's lists (assignments, users) and its error are validated into plain
dicts (:class:`WireAssignment`, :class:`WireUser`, :class:`ErrorResponse`: pydantic-validated
``TypedDict`` classes) that are already the canonical form of those entries: keyed by the
canonical snake_case names, in the canonical model's field order, every optional key present
(``None`` when Apple left it out), unknown keys dropped (they stay in ``raw``). The webhook puts
them into the event's ``data`` as they are: one validation pass, no model instance per entry
(adapters/apple/normalize.py; tests/unit/apple/test_normalize.py proves the shapes equal).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, with_config

# pydantic needs typing_extensions' TypedDict before Python 3.12 (a dependency of pydantic's own)
from typing_extensions import TypedDict


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


_ENTRY_CONFIG = ConfigDict(populate_by_name=True, extra="ignore")


@with_config(_ENTRY_CONFIG)
class ErrorResponse(TypedDict):
    """``{errorNumber, errorMessage, errorInfo?}``: sync API failures and async failures.

    Validated, it is :class:`broker.events.VendorErrorInfo`'s JSON form."""

    error_number: Annotated[StrictInt | None, Field(alias="errorNumber", default=None)]
    error_message: Annotated[StrictStr | None, Field(alias="errorMessage", default=None)]
    error_info: Annotated[dict[str, Any] | None, Field(alias="errorInfo", default=None)]


def _entity(alias: str | None = None) -> Any:
    """An optional id of an entry: at most MAX_ENTITY_ID_LENGTH characters, None when absent."""
    return Field(alias=alias, max_length=MAX_ENTITY_ID_LENGTH, default=None)


@with_config(_ENTRY_CONFIG)
class WireAssignment(TypedDict):
    """Validated, it is :class:`broker.events.Assignment`'s JSON form."""

    adam_id: Annotated[StrictStr, Field(alias="adamId", max_length=MAX_ENTITY_ID_LENGTH)]
    pricing_param: Annotated[StrictStr | None, _entity("pricingParam")]
    serial_number: Annotated[StrictStr | None, _entity("serialNumber")]
    client_user_id: Annotated[StrictStr | None, _entity("clientUserId")]


@with_config(_ENTRY_CONFIG)
class WireUser(TypedDict):
    """Validated, it is :class:`broker.events.AppleUser`'s JSON form."""

    client_user_id: Annotated[StrictStr | None, _entity("clientUserId")]
    email: Annotated[StrictStr | None, _entity()]
    id_hash: Annotated[StrictStr | None, _entity("idHash")]
    invite_code: Annotated[StrictStr | None, _entity("inviteCode")]
    managed_apple_id: Annotated[StrictStr | None, _entity("managedAppleId")]
    status: Annotated[StrictStr | None, _entity()]


class AssetCountBody(_Wire):
    adam_id: StrictStr = Field(alias="adamId", max_length=MAX_ENTITY_ID_LENGTH)
    count_delta: StrictInt = Field(alias="countDelta")
    pricing_param: StrictStr | None = Field(
        default=None, alias="pricingParam", max_length=MAX_ENTITY_ID_LENGTH
    )


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
