"""Kapua REST entities as the poller reads them (only the fields it relies on are typed).

Unknown fields are kept (``extra="allow"``); the adapter publishes the raw JSON object of every
notification/operation unchanged in the event's ``data.raw``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED"})
"""Statuses a notification row or the operation record closes with (Kapua then deletes the rows)."""
KNOWN_STATUSES = frozenset({"RUNNING", "COMPLETED", "FAILED", "STALE"})
"""Kapua's ``operationStatus`` enum; anything else is forwarded as ``mdm.unknown``."""
ENDED_STATUSES = frozenset({"COMPLETED", "FAILED", "STALE"})
"""Operation statuses that end a watch at once (an unknown status ends it after a grace)."""


class _Entity(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class AccessToken(_Entity):
    """Answer of every /authentication/* login or refresh call."""

    token_id: str = Field(alias="tokenId")
    refresh_token: str = Field(alias="refreshToken")
    expires_on: datetime = Field(alias="expiresOn")
    refresh_expires_on: datetime = Field(alias="refreshExpiresOn")
    scope_id: str = Field(alias="scopeId")
    user_id: str | None = Field(default=None, alias="userId")
    created_on: datetime | None = Field(default=None, alias="createdOn")


class Device(_Entity):
    id: str
    scope_id: str = Field(alias="scopeId")
    client_id: str | None = Field(default=None, alias="clientId")


class Operation(_Entity):
    """A ``deviceManagementOperation``; ``id`` is the path segment of its URLs."""

    id: str
    scope_id: str = Field(alias="scopeId")
    device_id: str = Field(alias="deviceId")
    operation_id: str | None = Field(default=None, alias="operationId")
    status: str
    resource: str | None = None
    started_on: datetime | None = Field(default=None, alias="startedOn")
    ended_on: datetime | None = Field(default=None, alias="endedOn")
    modified_on: datetime | None = Field(default=None, alias="modifiedOn")
    log: str | None = None

    @property
    def closed(self) -> bool:
        """COMPLETED or FAILED: Kapua closed it (``endedOn``, ``log``) and deleted its rows."""
        return self.status in TERMINAL_STATUSES

    @property
    def ended(self) -> bool:
        """Closed or STALE: nothing more will happen to it."""
        return self.status in ENDED_STATUSES

    @property
    def known(self) -> bool:
        return self.status in KNOWN_STATUSES


class Notification(_Entity):
    """A ``managementOperationNotification`` row (deleted by Kapua when its operation closes)."""

    id: str
    scope_id: str = Field(alias="scopeId")
    operation_id: str = Field(alias="operationId")
    status: str
    sent_on: datetime = Field(alias="sentOn")
    created_on: datetime | None = Field(default=None, alias="createdOn")
    progress: int | None = None
    resource: str | None = None
    message: str | None = None

    def sort_key(self) -> tuple[datetime, datetime, str]:
        """sentOn (device clock), tie-broken by createdOn then id (VENDOR_NOTES 3.9)."""
        return (self.sent_on, self.created_on or self.sent_on, self.id)


class ListResult(BaseModel):
    """A ``*ListResult`` page: ``limitExceeded`` says whether more rows follow."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    items: list[dict[str, Any]] = Field(default_factory=list)
    limit_exceeded: bool = Field(default=False, alias="limitExceeded")
    size: int = 0
    total_count: int | None = Field(default=None, alias="totalCount")
