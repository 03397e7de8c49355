"""The Kapua renormalizer `dlq replay` uses: the poller's event ids, from the context headers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from adapters.kapua.replay import (
    OPERATION,
    ROW,
    WATCH_REQUEST,
    closing_unknown,
    letter_context,
    renormalize,
)
from broker.dlq import DeadLetter, NotReplayable, replay
from broker.errors import NormalizationError
from broker.events import EventType
from tests.unit.kapua.test_normalize_and_cursors import OPERATION as RECORD
from tests.unit.kapua.test_normalize_and_cursors import ROW as ROW_RAW

SCOPE, DEVICE, OP = "AQ", "UVjeGkGVT3A", "cjmXXKvLUY8"


def _letter(payload: dict[str, Any], context: list[tuple[str, str]], **extra: bytes) -> DeadLetter:
    headers = {"vendor": b"kapua", "tenant": SCOPE.encode(), **extra}
    headers.update((name, value.encode()) for name, value in context)
    return DeadLetter(0, 3, 0, b"kapua:AQ", orjson.dumps(payload), headers)


def test_a_row_becomes_its_progress_event_and_a_lying_row_still_fails() -> None:
    (event,) = renormalize(_letter(ROW_RAW, letter_context(ROW, SCOPE, DEVICE, OP)))
    assert (event.id, event.type) == (ROW_RAW["id"], EventType.OPERATION_PROGRESSED)
    assert event.subject == f"devices/{DEVICE}/operations/{OP}"
    lying = _letter(ROW_RAW | {"operationId": "other"}, letter_context(ROW, SCOPE, DEVICE, OP))
    with pytest.raises(NormalizationError, match="mismatch"):
        renormalize(lying)
    with pytest.raises(NormalizationError, match="schema"):
        renormalize(_letter(ROW_RAW | {"sentOn": None}, letter_context(ROW, SCOPE, DEVICE, OP)))


def test_an_operation_record_gives_the_terminal_id_or_nothing_while_running() -> None:
    context = letter_context(OPERATION, SCOPE, DEVICE, OP)
    (ended,) = renormalize(_letter(RECORD, context))
    assert (ended.id, ended.type) == (f"{OP}:COMPLETED", EventType.OPERATION_COMPLETED)
    (odd,) = renormalize(_letter(RECORD | {"status": "CANCELLED"}, context))
    assert (odd.id, odd.type) == (f"{OP}:CANCELLED", EventType.UNKNOWN)
    assert renormalize(_letter(RECORD | {"status": "RUNNING"}, context)) == []


async def test_letters_without_context_and_truncated_letters_are_reported_not_replayed() -> None:
    old = _letter(ROW_RAW, [])
    request = _letter({"scopeId": SCOPE}, letter_context(WATCH_REQUEST))
    cut = _letter(
        ROW_RAW,
        letter_context(ROW, SCOPE, DEVICE, OP),
        **{
            "dlq-truncated": b"true",
            "dlq-original-size": b"9000000",
            "dlq-original-sha256": b"ab" * 32,
        },
    )
    for letter in (old, request):
        with pytest.raises(NotReplayable):
            renormalize(letter)
    report = await replay([old, request, cut], {"kapua": renormalize}, None)
    assert [o.status for o in report.outcomes] == ["not_replayable"] * 2 + ["truncated"]
    assert "no polling context" in report.outcomes[0].detail
    assert "watch request" in report.outcomes[1].detail
    assert f"of 9000000 bytes, original sha256 {'ab' * 32}" in report.outcomes[2].detail
    assert report.failed == 3


def test_a_terminal_row_is_decided_by_the_operation_record_in_its_letter() -> None:
    closing = ROW_RAW | {"status": "COMPLETED", "progress": 100, "sentOn": RECORD["endedOn"]}
    earlier = ROW_RAW | {"status": "COMPLETED", "progress": 100}  # a phase end (DEPLOY-V2)
    with pytest.raises(NotReplayable, match="without the operation record"):
        renormalize(_letter(closing, letter_context(ROW, SCOPE, DEVICE, OP)))
    context = letter_context(ROW, SCOPE, DEVICE, OP, RECORD)
    (ended,) = renormalize(_letter(closing, context))
    assert (ended.id, ended.type) == (f"{OP}:COMPLETED", EventType.OPERATION_COMPLETED)
    assert ended.data["terminal_row"] == closing
    (phase,) = renormalize(_letter(earlier, context))
    assert (phase.id, phase.type) == (earlier["id"], EventType.OPERATION_PROGRESSED)
    running = letter_context(ROW, SCOPE, DEVICE, OP, RECORD | {"status": "RUNNING"})
    (still,) = renormalize(_letter(closing, running))
    assert (still.id, still.type) == (closing["id"], EventType.OPERATION_PROGRESSED)
    failed = ROW_RAW | {"status": "FAILED", "sentOn": RECORD["endedOn"]}
    (fail,) = renormalize(_letter(failed, letter_context(ROW, SCOPE, DEVICE, OP, RECORD)))
    assert fail.type is EventType.OPERATION_PROGRESSED  # the record says COMPLETED: not this row
    lying = letter_context(ROW, SCOPE, DEVICE, OP, RECORD | {"id": "other"})
    with pytest.raises(NormalizationError, match="mismatch"):
        renormalize(_letter(closing, lying))


def test_a_row_of_an_operation_deleted_before_its_record_was_read_is_not_replayable() -> None:
    """Valid (``closing_unknown``) or not (``schema``): the record that decides is gone."""
    closing = ROW_RAW | {"status": "COMPLETED", "progress": 100, "sentOn": RECORD["endedOn"]}
    gone = {"type": "kapuaErrorCode", "kapuaErrorCode": "ENTITY_NOT_FOUND"}
    context = letter_context(ROW, SCOPE, DEVICE, OP, vanished=gone)
    assert ("kapua-operation-vanished", orjson.dumps(gone).decode()) in context
    for payload in (closing, closing | {"sentOn": None}):
        with pytest.raises(NotReplayable) as caught:
            renormalize(_letter(payload, context))
        assert str(caught.value) == closing_unknown(OP)
    assert f"mdm.operation.vanished {OP}:VANISHED" in closing_unknown(OP)
