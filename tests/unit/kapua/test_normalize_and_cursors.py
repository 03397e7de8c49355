"""Kapua rows/operations -> canonical events; state-record merge and ownership rules."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.kapua.cursors import (
    OpRecord,
    cursor_value,
    done_value,
    merge,
    op_key,
    partition_for,
    watch_value,
)
from adapters.kapua.models import Notification, Operation
from adapters.kapua.normalize import progress_event, terminal_event
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


def test_watch_record_never_replaces_a_cursor_but_cursor_and_tombstone_replace() -> None:
    key = op_key("AQ", "op1")
    state: dict[str, OpRecord] = {}
    merge(state, key, watch_value("AQ", "d1", "op1", "discovery"))
    assert state[key].kind == "watch"
    merge(state, key, cursor_value("AQ", "d1", "op1", 2, ["a", "b"]))
    merge(state, key, watch_value("AQ", "d1", "op1", "request"))
    assert (state[key].kind, state[key].seen, state[key].last_raw_kind) == (
        "cursor",
        ["a", "b"],
        "watch",
    )
    merge(state, key, done_value("AQ", "d1", "op1", "COMPLETED"))
    assert state[key].kind == "done"
    merge(state, key, None)
    assert key not in state
    merge(state, key, {"kind": "bogus"})
    assert key not in state


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
