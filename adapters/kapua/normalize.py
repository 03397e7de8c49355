"""Kapua rows and operation records -> canonical events (DESIGN.md section 3).

* progress row (``RUNNING``) -> ``mdm.operation.progressed``, id = the notification ``id``,
  time = ``sentOn``;
* terminal state -> ``mdm.operation.completed`` / ``mdm.operation.failed``, id =
  :func:`broker.events.kapua_terminal_id` (``{operation id}:{COMPLETED|FAILED}``) whether it was seen
  as a terminal row or on the operation record, time = ``endedOn`` (else the row's ``sentOn``);
* a COMPLETED/FAILED row while the operation record is still RUNNING (Kapua's DEPLOY-V2 download
  phase before install) is a phase end, not the operation's: ``mdm.operation.progressed`` with the
  row id;
* key = :func:`broker.events.kapua_key` (scope, device): one device's events share a partition.
"""

from __future__ import annotations

from typing import Any

from adapters.kapua.models import Notification, Operation
from broker.events import (
    CanonicalEvent,
    EventType,
    OperationData,
    Vendor,
    kapua_key,
    kapua_terminal_id,
    make_event,
)

_TERMINAL_TYPES = {
    "COMPLETED": EventType.OPERATION_COMPLETED,
    "FAILED": EventType.OPERATION_FAILED,
}


def subject(device_id: str, operation_id: str) -> str:
    return f"devices/{device_id}/operations/{operation_id}"


def progress_event(
    scope_id: str, device_id: str, row: Notification, raw: dict[str, Any]
) -> CanonicalEvent:
    """The event of one notification row that does not end the operation."""
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
) -> CanonicalEvent:
    """The one terminal event of a closed operation (same id whichever way it was observed).

    ``raw`` is the operation record as received (it carries ``log`` and ``endedOn``); when the
    terminal row was seen too, its id, message and progress are included.
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
    )
    when = operation.ended_on or (terminal_row.sent_on if terminal_row else None)
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
