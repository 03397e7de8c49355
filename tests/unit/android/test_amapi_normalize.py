"""AMAPI Pub/Sub message -> canonical events: every notification type, ids, keys, failures."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from adapters.android.amapi_normalize import normalize_message
from broker.errors import NormalizationError
from broker.events import (
    DeviceCommandData,
    DeviceEnrolledData,
    DeviceStatusReportedData,
    DeviceUsageLogData,
    EnterpriseUpgradedData,
    EventType,
    RawOnlyData,
)
from simulators.android import amapi_resources as res

E, D = "LC0abc1234", "3a6f1c2e9b7d4e01"


def message(
    kind: str | None, resource: Any, message_id: str = "2070443601311540"
) -> dict[str, Any]:
    attributes = {} if kind is None else {"notificationType": kind}
    return {
        "data": base64.b64encode(orjson.dumps(resource)).decode(),
        "attributes": attributes,
        "messageId": message_id,
        "publishTime": "2026-12-01T10:00:00.123456Z",
    }


def test_enrollment_and_status_report_carry_the_device() -> None:
    device = res.device(E, D)
    [enrolled] = normalize_message(message("ENROLLMENT", device))
    [status] = normalize_message(message("STATUS_REPORT", device, "2070443601311541"))
    assert enrolled.type is EventType.DEVICE_ENROLLED
    assert status.type is EventType.DEVICE_STATUS_REPORTED
    for event in (enrolled, status):
        assert event.source == f"/android/enterprises/{E}"
        assert event.partitionkey == f"android:{E}:{D}"
        assert event.subject == D
        assert event.data["raw"] == device
        assert event.data["pubsub"] == {
            "message_id": event.id,
            "publish_time": "2026-12-01T10:00:00.123456Z",
            "attributes": {"notificationType": event.vendortype},
        }
    assert enrolled.id == "2070443601311540"
    data = enrolled.typed_data()
    assert isinstance(data, DeviceEnrolledData)
    assert (data.management_type, data.state) == ("DEVICE_OWNER", "ACTIVE")
    status_data = status.typed_data()
    assert isinstance(status_data, DeviceStatusReportedData)
    assert status_data.applied_policy_version == "3"


def test_command_outcome_is_in_the_type() -> None:
    [done] = normalize_message(message("COMMAND", res.operation(E, D, "77", command_type="REBOOT")))
    failed_op = res.operation(E, D, "78", error={"code": 9, "message": "unreachable"})
    [failed] = normalize_message(message("COMMAND", failed_op))
    [pending] = normalize_message(message("COMMAND", res.operation(E, D, "79", done=False)))
    assert done.type is EventType.DEVICE_COMMAND_COMPLETED
    assert failed.type is EventType.DEVICE_COMMAND_FAILED
    assert pending.type is EventType.UNKNOWN  # not finished: no outcome claimed
    data = failed.typed_data()
    assert isinstance(data, DeviceCommandData)
    assert (data.operation_id, data.device_id, data.error and data.error.code) == ("78", D, 9)
    assert isinstance(done.typed_data(), DeviceCommandData)


def test_usage_logs_one_event_per_item_with_indexed_ids() -> None:
    batch = res.usage_logs(E, D, 3)
    events = normalize_message(message("USAGE_LOGS", batch))
    assert [e.id for e in events] == [f"2070443601311540:{i}" for i in range(3)]
    for index, event in enumerate(events):
        data = event.typed_data()
        assert isinstance(data, DeviceUsageLogData)
        assert (data.item_index, data.item_count) == (index, 3)
        assert data.event == batch["usageLogEvents"][index]
        assert data.raw["usageLogEvents"] == [batch["usageLogEvents"][index]]
        assert event.partitionkey == f"android:{E}:{D}"
        assert event.time.isoformat().startswith(batch["usageLogEvents"][index]["eventTime"][:19])
    [empty] = normalize_message(message("USAGE_LOGS", {**batch, "usageLogEvents": []}))
    assert empty.type is EventType.UNKNOWN


def test_enterprise_upgrade() -> None:
    [upgraded] = normalize_message(message("ENTERPRISE_UPGRADE", res.enterprise_upgrade(E)))
    assert upgraded.type is EventType.ENTERPRISE_UPGRADED
    assert upgraded.partitionkey == f"android:{E}:-"
    assert isinstance(upgraded.typed_data(), EnterpriseUpgradedData)
    other = res.enterprise_upgrade(E, "UPGRADE_STATE_UNSPECIFIED")
    [unknown] = normalize_message(message("ENTERPRISE_UPGRADE", other))
    assert unknown.type is EventType.UNKNOWN


@pytest.mark.parametrize("kind", [None, "COMPLIANCE_REPORT", "SOMETHING_NEW"])
def test_other_types_are_forwarded_as_unknown(kind: str | None) -> None:
    [event] = normalize_message(message(kind, {"name": f"enterprises/{E}/devices/{D}"}))
    assert event.type is EventType.UNKNOWN
    assert event.vendortype == (kind or "unknown")
    assert (event.tenant, event.subject) == (E, D)
    data = event.typed_data()
    assert isinstance(data, RawOnlyData)
    assert data.pubsub is not None
    assert data.pubsub.message_id == event.id


def test_redelivery_gives_identical_events() -> None:
    msg = message("STATUS_REPORT", res.device(E, D))
    assert normalize_message(msg) == normalize_message(dict(msg))


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ("%%% not base64 %%%", "not valid base64"),
        (base64.b64encode(b"{nope").decode(), "not JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "not a JSON object"),
        ("", "no data"),
    ],
)
def test_undecodable_data_names_the_message(data: str, detail: str) -> None:
    msg = {"data": data, "attributes": {"notificationType": "ENROLLMENT"}, "messageId": "42"}
    with pytest.raises(NormalizationError, match=detail) as info:
        normalize_message(msg)
    assert "pubsub message 42" in info.value.detail
    assert info.value.reason == "malformed"


def test_device_resource_without_a_device_name_is_a_schema_error() -> None:
    with pytest.raises(NormalizationError, match="pubsub message 7") as info:
        normalize_message(message("ENROLLMENT", {"state": "ACTIVE"}, "7"))
    assert info.value.reason == "schema"


def test_dead_lettered_message_replays_to_the_same_ids_once_fixed() -> None:
    from adapters.android.replay import renormalize
    from broker.dlq import DeadLetter

    msg = message("USAGE_LOGS", res.usage_logs(E, D, 2))
    letter = DeadLetter(
        partition=0,
        offset=0,
        timestamp_ms=0,
        key=None,
        payload=orjson.dumps(msg),
        headers={"vendor": b"android"},
    )
    assert [e.id for e in renormalize(letter)] == [e.id for e in normalize_message(msg)]
    assert [e.id for e in renormalize(letter)] == ["2070443601311540:0", "2070443601311540:1"]
