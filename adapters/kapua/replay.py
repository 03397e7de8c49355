"""Re-drive a dead-lettered Kapua row or operation record through the current mapping.

A Kapua dead letter's payload is the JSON object as Kapua returned it; what the poller knew
besides (which watched operation it was reading) is in the letter's context headers, written by
:func:`letter_context`:

* ``kapua-kind``: ``row`` (a notification row), ``operation`` (the operation record) or
  ``watch-request`` (a request from the watch topic: not vendor input, never replayed);
* ``kapua-scope-id``, ``kapua-device-id``, ``kapua-operation-id``: the watched operation;
* ``kapua-operation``: for a COMPLETED/FAILED row, the operation record the poller read (JSON);
* ``kapua-operation-vanished``: for a COMPLETED/FAILED row, Kapua's 404 answer (JSON) when the
  operation was deleted before its record said whether the row closed it.

:func:`renormalize` validates the payload with the current models and builds the event the poller
would have published, with the same id:

* a RUNNING row (or one in a status Kapua does not define) -> its progress (or ``mdm.unknown``)
  event, id = the row's ``id``;
* a COMPLETED/FAILED row: the poller decides with the operation record, so its letter carries the
  record it read (``kapua-operation``, JSON): the row that closed the operation
  (:func:`adapters.kapua.normalize.closed_by`, the poller's rule too) -> the
  operation's terminal event (``{operation id}:{STATUS}``, with this row, exactly as the poller
  folds a terminal row into it; consumers dedupe it against the one the poller published from the
  record); any other (a DEPLOY-V2 download phase that ended while the operation ran on) -> its
  progress event. Without the record it is not replayable, labelling it either way could be
  wrong: the operation was deleted first (``kapua-operation-vanished``; valid rows are then
  dead-lettered with reason ``closing_unknown``, the poller publishes
  ``{operation id}:VANISHED``), its record was invalid, or the letter is an older broker's;
* an operation record that ended -> its terminal event (``{operation id}:{STATUS}``, as when the
  poller reads the record), in a status the broker does not know -> ``mdm.unknown``
  (``{operation id}:{status}``), still RUNNING -> nothing (the poller publishes how it ends).

A row or record that names another operation or scope than the watched one still fails
(``mismatch``). Letters written before these headers existed are not replayable
(:class:`broker.dlq.NotReplayable`): Kapua's API is then the source.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from adapters.kapua.models import TERMINAL_STATUSES, Notification, Operation
from adapters.kapua.normalize import (
    closed_by,
    progress_event,
    terminal_event,
    unknown_status_event,
)
from broker.dlq import DeadLetter, NotReplayable
from broker.errors import NormalizationError
from broker.events import CanonicalEvent
from broker.metrics import RejectReason

ROW = "row"
OPERATION = "operation"
WATCH_REQUEST = "watch-request"

_Model = TypeVar("_Model", Notification, Operation)


def letter_context(
    kind: str,
    scope_id: str = "",
    device_id: str = "",
    operation_id: str = "",
    record: dict[str, Any] | None = None,
    vanished: dict[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """The dead letter's context headers (see the module docstring); ``record``: the operation
    record read for a COMPLETED/FAILED row; ``vanished``: Kapua's 404 answer instead, when the
    operation was deleted before its record was read."""
    pairs = [("kapua-kind", kind)]
    if kind != WATCH_REQUEST:
        pairs += [
            ("kapua-scope-id", scope_id),
            ("kapua-device-id", device_id),
            ("kapua-operation-id", operation_id),
        ]
    if record is not None:
        pairs.append(("kapua-operation", orjson.dumps(record).decode()))
    if vanished is not None:
        pairs.append(("kapua-operation-vanished", orjson.dumps(vanished).decode()))
    return pairs


def closing_unknown(operation_id: str) -> str:
    """Why a COMPLETED/FAILED row of an operation deleted before its record was read is dead-lettered
    and not replayable: the same words in the letter's detail and in the replay report."""
    return (
        f"operation {operation_id} was deleted (404) before its record said whether this "
        "COMPLETED/FAILED row closed it or ended a phase: not labelled either way (its end was "
        f"published as mdm.operation.vanished {operation_id}:VANISHED)"
    )


def row_mismatch(row: Notification, scope_id: str, operation_id: str) -> str:
    """The dead letter's detail for a row listed under another operation or scope than its own."""
    return (
        f"notification {row.id} listed under operation {operation_id} of scope {scope_id} "
        f"says operationId={row.operation_id!r} scopeId={row.scope_id!r}"
    )


def renormalize(letter: DeadLetter) -> list[CanonicalEvent]:
    """The events of a Kapua dead letter under the current mapping (see the module docstring).
    Raises NormalizationError when it still fails, NotReplayable without its context."""
    kind = letter.header("kapua-kind")
    if kind == WATCH_REQUEST:
        raise NotReplayable("a malformed watch request, not Kapua input: send a corrected one")
    scope_id = letter.header("kapua-scope-id")
    device_id = letter.header("kapua-device-id")
    operation_id = letter.header("kapua-operation-id")
    if kind not in (ROW, OPERATION) or not (scope_id and device_id and operation_id):
        raise NotReplayable(
            "no polling context (kapua-* headers; written by an older broker): "
            "Kapua is re-read from its API instead"
        )
    if kind == ROW and letter.header("kapua-operation-vanished"):
        raise NotReplayable(closing_unknown(operation_id))  # valid or not, the decision is gone
    raw = _json_object(letter.payload)
    if kind == ROW:
        row = _validate(Notification, raw, f"notification of operation {operation_id}")
        if row.operation_id != operation_id or row.scope_id != scope_id:
            raise NormalizationError(
                RejectReason.MISMATCH, row_mismatch(row, scope_id, operation_id)
            )
        if row.status not in TERMINAL_STATUSES:
            return [progress_event(scope_id, device_id, row, raw)]
        record_text = letter.header("kapua-operation")
        if not record_text:
            raise NotReplayable(
                f"a {row.status} row without the operation record that says whether it closed "
                f"operation {operation_id} (its record was invalid, or an older broker's letter): "
                "its outcome was published from Kapua's API"
            )
        record = _json_object(record_text.encode())
        operation = _operation(record, scope_id, operation_id)
        if closed_by(operation, row):
            return [terminal_event(operation, record, row, raw)]
        return [progress_event(scope_id, device_id, row, raw)]  # a phase ended, not the operation
    operation = _operation(raw, scope_id, operation_id)
    if operation.ended:
        return [terminal_event(operation, raw)]
    if operation.known:  # RUNNING: the poller publishes how it ends
        return []
    return [unknown_status_event(operation, raw)]


def _operation(raw: dict[str, Any], scope_id: str, operation_id: str) -> Operation:
    operation = _validate(Operation, raw, f"operation {operation_id}")
    if operation.id != operation_id or operation.scope_id != scope_id:
        raise NormalizationError(
            RejectReason.MISMATCH,
            f"operation record read as {operation_id} of scope {scope_id} says "
            f"id={operation.id!r} scopeId={operation.scope_id!r}",
        )
    return operation


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise NormalizationError(RejectReason.MALFORMED, str(exc)) from exc
    if not isinstance(raw, dict):
        raise NormalizationError(RejectReason.MALFORMED, "not a JSON object")
    return raw


def _validate(model: type[_Model], raw: dict[str, Any], what: str) -> _Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise NormalizationError(
            RejectReason.SCHEMA, f"{what}: {exc.error_count()} error(s)"
        ) from exc
