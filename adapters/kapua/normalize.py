"""Kapua rows and operation records -> canonical events (DESIGN.md section 3).

* progress row (``RUNNING``) -> ``mdm.operation.progressed``, id = the notification ``id``,
  time = ``sentOn``; a row in a status Kapua does not define -> ``mdm.unknown`` (row id, raw row);
* how the operation ended -> ``mdm.operation.completed`` / ``.failed`` / ``.stale``, id =
  :func:`broker.events.kapua_terminal_id` (``{operation id}:{STATUS}``) whether it was seen as a
  terminal row or on the operation record, time = ``endedOn`` (else the row's ``sentOn``, else
  ``modifiedOn``); ``raw`` is the operation record and ``terminal_row`` the terminal row as
  received, when one was seen;
* an operation deleted while watched (404) -> ``mdm.operation.vanished``, id
  ``{operation id}:VANISHED``, ``last_status`` = the status last seen (record, else newest row),
  ``raw`` = the 404 answer;
* an operation record in a status the broker does not know -> ``mdm.unknown``, id
  ``{operation id}:{status}`` (:func:`broker.events.kapua_unknown_status_id`), ``raw`` = the record;
* a COMPLETED/FAILED row folds into the terminal event only if it closed the operation
  (:func:`closed_by`); any other (Kapua's DEPLOY-V2 download phase before install, whether the
  record is still RUNNING or has closed since) is a phase end, not the operation's:
  ``mdm.operation.progressed`` with the row id;
* key = :func:`broker.events.kapua_key` (scope, device): one device's events share a partition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.kapua.models import KNOWN_STATUSES, Notification, Operation
from broker.events import (
    CanonicalEvent,
    EventType,
    OperationData,
    RawOnlyData,
    Vendor,
    kapua_key,
    kapua_terminal_id,
    kapua_unknown_status_id,
    make_event,
)

_TERMINAL_TYPES = {
    "COMPLETED": EventType.OPERATION_COMPLETED,
    "FAILED": EventType.OPERATION_FAILED,
    "STALE": EventType.OPERATION_STALE,
}


def subject(device_id: str, operation_id: str) -> str:
    return f"devices/{device_id}/operations/{operation_id}"


def closed_by(operation: Operation, row: Notification) -> bool:
    """Whether ``row`` is the notification Kapua closed ``operation`` with: the record ended in the
    row's status with ``endedOn`` = the row's ``sentOn`` (VENDOR_NOTES 3.7: Kapua closes an
    operation from its terminal NOTIFY, copying that notification's ``sentOn`` into ``endedOn``).

    The one rule for the poller and ``dlq replay`` alike. Status alone is not enough: a DEPLOY-V2
    download ends with a COMPLETED row that does not close the operation, and the install phase
    may close it COMPLETED before the poller lists the install row. A record without ``endedOn``
    (not Kapua's) is decided on status alone.
    """
    if not operation.closed or operation.status != row.status:
        return False
    return operation.ended_on is None or operation.ended_on == row.sent_on


def progress_event(
    scope_id: str, device_id: str, row: Notification, raw: dict[str, Any]
) -> CanonicalEvent:
    """The event of one notification row that does not end the operation."""
    if row.status not in KNOWN_STATUSES:
        return make_event(
            id=row.id,
            vendor=Vendor.KAPUA,
            tenant=scope_id,
            type=EventType.UNKNOWN,
            vendortype=row.status,
            partitionkey=kapua_key(scope_id, device_id),
            data=RawOnlyData(raw=raw),
            time=row.sent_on,
            subject=subject(device_id, row.operation_id),
        )
    data = OperationData(
        raw=raw,
        operation_id=row.operation_id,
        device_id=device_id,
        status=row.status,
        progress=row.progress,
        resource=row.resource,
        message=row.message,
        notification_id=row.id,
        observed_via="notification",
    )
    return make_event(
        id=row.id,
        vendor=Vendor.KAPUA,
        tenant=scope_id,
        type=EventType.OPERATION_PROGRESSED,
        vendortype=row.status,
        partitionkey=kapua_key(scope_id, device_id),
        data=data,
        time=row.sent_on,
        subject=subject(device_id, row.operation_id),
    )


def terminal_event(
    operation: Operation,
    raw_operation: dict[str, Any],
    terminal_row: Notification | None = None,
    terminal_row_raw: dict[str, Any] | None = None,
) -> CanonicalEvent:
    """The one event of an operation that ended COMPLETED, FAILED or STALE (same id whichever
    way it was observed).

    ``raw`` is the operation record as received (it carries ``log`` and ``endedOn``); when the
    terminal row was seen too, its id, message and progress are included and ``terminal_row`` is
    that row exactly as received.
    """
    status = operation.status
    data = OperationData(
        raw=raw_operation,
        operation_id=operation.id,
        device_id=operation.device_id,
        device_operation_id=operation.operation_id,
        status=status,
        progress=terminal_row.progress if terminal_row else None,
        resource=terminal_row.resource if terminal_row else operation.resource,
        message=terminal_row.message if terminal_row else None,
        log=operation.log,
        notification_id=terminal_row.id if terminal_row else None,
        ended_on=operation.ended_on,
        observed_via="notification" if terminal_row else "operation",
        terminal_row=terminal_row_raw if terminal_row else None,
    )
    when = (
        operation.ended_on
        or (terminal_row.sent_on if terminal_row else None)
        or operation.modified_on
    )
    return make_event(
        id=kapua_terminal_id(operation.id, status),
        vendor=Vendor.KAPUA,
        tenant=operation.scope_id,
        type=_TERMINAL_TYPES[status],
        vendortype=status,
        partitionkey=kapua_key(operation.scope_id, operation.device_id),
        data=data,
        time=when,
        subject=subject(operation.device_id, operation.id),
    )


def vanished_event(
    scope_id: str,
    device_id: str,
    operation_id: str,
    last_status: str | None,
    answer: dict[str, Any],
    when: datetime | None = None,
) -> CanonicalEvent:
    """An operation deleted while watched (Kapua answered 404): id ``{operation id}:VANISHED``."""
    data = OperationData(
        raw=answer,
        operation_id=operation_id,
        device_id=device_id,
        status="VANISHED",
        last_status=last_status,
        observed_via="operation",
    )
    code = answer.get("kapuaErrorCode")
    return make_event(
        id=kapua_terminal_id(operation_id, "VANISHED"),
        vendor=Vendor.KAPUA,
        tenant=scope_id,
        type=EventType.OPERATION_VANISHED,
        vendortype=code if isinstance(code, str) and code else "ENTITY_NOT_FOUND",
        partitionkey=kapua_key(scope_id, device_id),
        data=data,
        time=when,
        subject=subject(device_id, operation_id),
    )


def unknown_status_event(operation: Operation, raw_operation: dict[str, Any]) -> CanonicalEvent:
    """An operation record in a status the broker does not know, forwarded as ``mdm.unknown``."""
    return make_event(
        id=kapua_unknown_status_id(operation.id, operation.status),
        vendor=Vendor.KAPUA,
        tenant=operation.scope_id,
        type=EventType.UNKNOWN,
        vendortype=operation.status,
        partitionkey=kapua_key(operation.scope_id, operation.device_id),
        data=RawOnlyData(raw=raw_operation),
        time=operation.ended_on or operation.modified_on,
        subject=subject(operation.device_id, operation.id),
    )
