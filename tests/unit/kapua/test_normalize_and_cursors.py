"""Kapua rows/operations -> canonical events; state-record merge and ownership rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.kapua.cursors import (
    OpRecord,
    OpSlots,
    cursor_value,
    done_value,
    merge,
    op_key,
    parse_record_key,
    partition_for,
    record_key,
    resolve_all,
    watch_value,
)
from adapters.kapua.models import Notification, Operation
from adapters.kapua.normalize import (
    progress_event,
    terminal_event,
    unknown_status_event,
    vanished_event,
)
from adapters.kapua.watch import parse_watch_request
from broker.events import EventType, decode_event, encode_event

ROW: dict[str, Any] = {
    "type": "managementOperationNotification",
    "id": "f1Hu1T8iIRw",
    "scopeId": "AQ",
    "createdOn": "2019-11-15T11:27:32.331Z",
    "createdBy": "Ag",
    "operationId": "cjmXXKvLUY8",
    "progress": 5,
    "resource": "download",
    "sentOn": "2019-11-15T11:27:32.277Z",
    "status": "RUNNING",
}
OPERATION: dict[str, Any] = {
    "type": "deviceManagementOperation",
    "id": "cjmXXKvLUY8",
    "scopeId": "AQ",
    "deviceId": "UVjeGkGVT3A",
    "endedOn": "2019-11-15T11:30:01.568Z",
    "log": "2019-11-15T11:27:32.277Z - download 5%\n",
    "operationId": "I-1DnL467js",
    "resource": "DOWNLOAD",
    "startedOn": "2019-11-15T11:27:24.842Z",
    "status": "COMPLETED",
}


def test_progress_row_maps_to_progressed_event_keyed_by_device() -> None:
    event = progress_event("AQ", "UVjeGkGVT3A", Notification.model_validate(ROW), ROW)
    assert event.id == "f1Hu1T8iIRw"
    assert event.type is EventType.OPERATION_PROGRESSED
    assert event.source == "/kapua/scopes/AQ"
    assert event.partitionkey == "kapua:AQ:UVjeGkGVT3A"
    assert event.vendortype == "RUNNING"
    assert event.data["raw"] == ROW
    assert event.data["progress"] == 5
    assert b'"time":"2019-11-15T11:27:32.277Z"' in encode_event(event)
    assert decode_event(encode_event(event)) == event


def test_terminal_id_is_the_same_via_row_or_operation_record() -> None:
    operation = Operation.model_validate(OPERATION)
    row = Notification.model_validate(ROW | {"id": "x1", "status": "COMPLETED", "progress": 100})
    via_op = terminal_event(operation, OPERATION)
    via_row = terminal_event(operation, OPERATION, row)
    assert via_op.id == via_row.id == "cjmXXKvLUY8:COMPLETED"
    assert via_op.type is EventType.OPERATION_COMPLETED
    assert via_op.data["observed_via"] == "operation"
    assert via_row.data["observed_via"] == "notification"
    assert via_op.data["log"] == OPERATION["log"]
    assert encode_event(via_op).find(b'"time":"2019-11-15T11:30:01.568Z"') > 0
    failed = terminal_event(Operation.model_validate(OPERATION | {"status": "FAILED"}), OPERATION)
    assert (failed.id, failed.type) == ("cjmXXKvLUY8:FAILED", EventType.OPERATION_FAILED)


def test_terminal_event_carries_the_terminal_row_beside_the_operation_record() -> None:
    operation = Operation.model_validate(OPERATION)
    row_raw = ROW | {"id": "x1", "status": "COMPLETED", "progress": 100, "vendorExtra": [1]}
    event = terminal_event(operation, OPERATION, Notification.model_validate(row_raw), row_raw)
    assert event.data["raw"] == OPERATION
    assert event.data["terminal_row"] == row_raw
    assert terminal_event(operation, OPERATION).data.get("terminal_row") is None
    assert decode_event(encode_event(event)).typed_data().model_dump()["terminal_row"] == row_raw


def test_stale_vanished_and_unknown_statuses_are_events_with_deterministic_ids() -> None:
    stale_raw = {k: v for k, v in OPERATION.items() if k != "endedOn"} | {
        "status": "STALE",
        "modifiedOn": "2019-11-16T00:00:00.000Z",
    }
    stale = terminal_event(Operation.model_validate(stale_raw), stale_raw)
    assert (stale.id, stale.type, stale.vendortype) == (
        "cjmXXKvLUY8:STALE",
        EventType.OPERATION_STALE,
        "STALE",
    )
    assert b'"time":"2019-11-16T00:00:00.000Z"' in encode_event(stale)
    answer = {"type": "entityNotFoundExceptionInfo", "kapuaErrorCode": "ENTITY_NOT_FOUND"}
    when = datetime(2019, 11, 16, tzinfo=UTC)  # receipt time; truncated to ms on the wire
    gone = vanished_event("AQ", "UVjeGkGVT3A", "cjmXXKvLUY8", "RUNNING", answer, when)
    assert (gone.id, gone.type, gone.vendortype) == (
        "cjmXXKvLUY8:VANISHED",
        EventType.OPERATION_VANISHED,
        "ENTITY_NOT_FOUND",
    )
    assert (gone.data["last_status"], gone.data["raw"]) == ("RUNNING", answer)
    cancelled_raw = stale_raw | {"status": "CANCELLED"}
    unknown = unknown_status_event(Operation.model_validate(cancelled_raw), cancelled_raw)
    assert (unknown.id, unknown.type, unknown.vendortype) == (
        "cjmXXKvLUY8:CANCELLED",
        EventType.UNKNOWN,
        "CANCELLED",
    )
    assert unknown.data == {"raw": cancelled_raw}
    weird_row = ROW | {"status": "PAUSED"}
    row_event = progress_event("AQ", "d", Notification.model_validate(weird_row), weird_row)
    assert (row_event.id, row_event.type) == ("f1Hu1T8iIRw", EventType.UNKNOWN)
    for event in (stale, gone, unknown, row_event):
        assert decode_event(encode_event(event)) == event


def test_each_kind_has_its_own_key_in_the_operations_partition() -> None:
    okey = op_key("AQ", "op1")
    for partitions in (1, 3, 12, 50):
        keys = {kind: record_key(okey, kind, partitions) for kind in ("watch", "cursor", "done")}
        assert len(set(keys.values())) == 3
        for kind, key in keys.items():
            assert partition_for(key, partitions) == partition_for(okey, partitions)
            assert parse_record_key(key) == (okey, kind)
    assert parse_record_key(okey) == (okey, None)  # the former single-key layout


def test_no_write_order_or_compaction_lets_a_watch_hide_a_cursor_or_done() -> None:
    okey = op_key("AQ", "op1")

    def k(kind: str) -> str:
        return record_key(okey, kind, 12)

    records = [
        (k("cursor"), cursor_value("AQ", "d1", "op1", 2, ["a", "b"])),
        (k("watch"), watch_value("AQ", "d1", "op1", "discovery")),
    ]
    for order in (records, list(reversed(records))):
        state: dict[str, OpSlots] = {}
        for key, value in order:
            merge(state, key, value)
        merged = resolve_all(state)[okey]
        assert (merged.kind, merged.seen) == ("cursor", ["a", "b"])
    merge(state, k("done"), done_value("AQ", "d1", "op1", "COMPLETED"))
    merge(state, k("watch"), watch_value("AQ", "d1", "op1", "request"))
    assert resolve_all(state)[okey].kind == "done"
    merge(state, k("done"), None)  # a tombstone removes only its own kind
    assert resolve_all(state)[okey].kind == "cursor"
    for kind in ("cursor", "watch"):
        merge(state, k(kind), None)
    assert okey not in state
    merge(state, k("cursor"), watch_value("AQ", "d1", "op1", "x"))  # kind must match the key
    merge(state, okey, {"kind": "bogus"})
    assert state == {}


def test_former_single_key_records_are_still_read() -> None:
    okey = op_key("AQ", "op1")
    state: dict[str, OpSlots] = {}
    merge(state, okey, cursor_value("AQ", "d1", "op1", 1, ["a"]))
    merge(state, okey, watch_value("AQ", "d1", "op1", "discovery"))
    assert resolve_all(state)[okey].seen == ["a"]
    merge(state, okey, None)
    assert state == {}


def test_a_cursor_carries_the_invalid_terminal_rows_waiting_for_the_record() -> None:
    row = {"id": "r1", "status": "COMPLETED", "progress": "100%"}
    plain = cursor_value("AQ", "d1", "op1", 1, ["a"])
    assert "suspects" not in plain  # written only when there are any
    value = cursor_value("AQ", "d1", "op1", 1, ["a"], {"r1": (row, "1 error(s)")})
    record = OpRecord.from_value(value)
    assert record is not None
    assert record.suspects == {"r1": (row, "1 error(s)")}
    value["suspects"] |= {"r2": {"row": "not an object", "detail": "x"}, "r3": []}
    record = OpRecord.from_value(value)
    assert record is not None
    assert list(record.suspects) == ["r1"]


def test_partition_for_matches_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for i in range(50):
        key = op_key("AQ", f"op{i}")
        expected = DefaultPartitioner()(key.encode(), list(range(7)), list(range(7)))
        assert partition_for(key, 7) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"scopeId":"AQ","deviceId":"d"}', "operationId"),
        (b'{"scopeId":"_","deviceId":"d","operationId":"o"}', "explicit"),
        (b'{"scopeId":"AQ","deviceId":"a/b","operationId":"o"}', "deviceId"),
    ],
)
def test_bad_watch_requests_are_rejected_with_a_reason(value: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_watch_request(value)


def test_watch_request_accepts_id_alias() -> None:
    assert parse_watch_request(b'{"scopeId":"AQ","deviceId":"d","id":"o"}') == ("AQ", "d", "o")


def test_a_cursor_carries_the_held_terminal_row() -> None:
    held = ROW | {"status": "COMPLETED", "progress": 100}
    assert "held" not in cursor_value("AQ", "d1", "op1", 1, ["a"])  # only while one waits
    record = OpRecord.from_value(cursor_value("AQ", "d1", "op1", 1, ["a"], None, held))
    assert record is not None
    assert record.held == held
    odd: Any
    for odd in ({"row": "not an object"}, [], "x"):
        value = cursor_value("AQ", "d1", "op1", 1, ["a"]) | {"held": odd}
        record = OpRecord.from_value(value)
        assert record is not None
        assert record.held is None
