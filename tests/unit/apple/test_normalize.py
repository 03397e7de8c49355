"""Apple notification -> canonical event (DESIGN.md section 3)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.apple.models import StatusResponse
from adapters.apple.normalize import event_id_of, normalize, status_event
from broker.errors import NormalizationError
from broker.events import AssignmentData, EventType, UserAssociatedData, UserData
from tests.unit.apple.seeds import (
    ASSET_COUNT,
    ASSOCIATE,
    SEED_EXAMPLES,
    UID,
    USER_ASSOCIATED,
    USER_CREATE,
)


@pytest.mark.parametrize(("raw", "event_type", "vendortype"), SEED_EXAMPLES)
def test_every_seed_example(raw: dict[str, Any], event_type: str, vendortype: str) -> None:
    received = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    event = normalize(copy.deepcopy(raw), received_at=received, expected_uid=UID)
    assert event.type.value == event_type
    assert event.vendortype == vendortype
    assert event.id == raw["notificationId"]
    assert event.source == f"/apple/locations/{UID}"
    assert event.tenant == UID
    assert event.partitionkey == f"apple:{UID}"
    assert event.time == received
    assert event.data["raw"] == raw
    event.typed_data()


def test_fields_map_to_snake_case_models() -> None:
    count = normalize(ASSET_COUNT)
    assert count.data["adam_id"] == "408709785"
    assert count.data["count_delta"] == -12
    assert count.data["pricing_param"] == "STDQ"
    assert count.subject == "408709785"

    assoc = AssignmentData.model_validate(normalize(ASSOCIATE).data)
    assert assoc.event_id == "87cbc650-16cc-4f9e-a833-e622f377a9f7"
    assert assoc.result == "SUCCESS"
    assert assoc.assignments[0].serial_number == "97c42a74-c30e-4172-a65f-6e5a5ba3d477"
    assert assoc.error is None

    users = UserData.model_validate(normalize(USER_CREATE).data)
    assert users.users[0].invite_code == "f551b37da07146628e8dcbe0111f0364"
    associated = UserAssociatedData.model_validate(normalize(USER_ASSOCIATED).data)
    assert associated.users[0].id_hash == "leSKk3IaE2vk2KLmv2k3/200D3="
    assert event_id_of(normalize(USER_CREATE)) == "e0def1f8-9158-4343-9c52-8dd32da50b9b"
    assert event_id_of(count) is None


def test_failure_result_carries_the_error() -> None:
    raw = copy.deepcopy(ASSOCIATE)
    raw["notification"]["result"] = "FAILURE"
    raw["notification"]["error"] = {
        "errorNumber": 9709,
        "errorMessage": "There aren't enough assets available to complete this association.",
        "errorInfo": {"serialNumbers": ["97c42a74-c30e-4172-a65f-6e5a5ba3d477"]},
    }
    data = AssignmentData.model_validate(normalize(raw).data)
    assert data.result == "FAILURE"
    assert data.error is not None
    assert data.error.error_number == 9709
    assert data.error.error_info == {"serialNumbers": ["97c42a74-c30e-4172-a65f-6e5a5ba3d477"]}


def test_unknown_types_are_forwarded_not_dropped() -> None:
    raw = {
        "notification": {"x": 1},
        "notificationId": "n1",
        "notificationType": "UNLIMITED_ASSET",
        "uId": UID,
    }
    event = normalize(raw)
    assert event.type is EventType.UNKNOWN
    assert event.vendortype == "UNLIMITED_ASSET"
    assert event.data == {"raw": raw}
    sub = copy.deepcopy(ASSOCIATE)
    sub["notification"]["type"] = "TRANSFER"
    other = normalize(sub)
    assert other.type is EventType.UNKNOWN
    assert other.vendortype == "ASSET_MANAGEMENT/TRANSFER"


def test_extra_keys_from_apple_are_tolerated_and_kept_in_raw() -> None:
    raw = copy.deepcopy(ASSET_COUNT)
    raw["notification"]["newField"] = True
    raw["extra"] = "x"
    assert normalize(raw).data["raw"] == raw


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"notificationId": "n", "notificationType": "ASSET_COUNT", "uId": UID},
        {**ASSET_COUNT, "notificationId": ""},
        {**ASSET_COUNT, "uId": 2049025000431439},
        {**ASSET_COUNT, "notification": {"adamId": "1", "countDelta": "12"}},
        {**ASSET_COUNT, "notification": {"countDelta": 1}},
        {
            **ASSOCIATE,
            "notification": {"type": "ASSOCIATE", "assignments": [{"pricingParam": "x"}]},
        },
        {**USER_ASSOCIATED, "notification": {}},
    ],
)
def test_schema_violations_raise(raw: Any) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize(raw)
    assert info.value.reason == "schema"


def test_uid_mismatch() -> None:
    with pytest.raises(NormalizationError) as info:
        normalize(ASSET_COUNT, expected_uid="other")
    assert info.value.reason == "uid_mismatch"


def test_status_event_id_is_deterministic() -> None:
    raw = {
        "eventStatus": "FAILED",
        "eventType": "ASSOCIATE",
        "numCompleted": 14,
        "numRequested": 16,
        "failures": [
            {"errorNumber": 9609, "errorMessage": "x", "errorInfo": {"clientUserIds": ["client-4"]}}
        ],
    }
    status = StatusResponse.model_validate(raw)
    first = status_event(status, raw, event_id="ev", uid=UID)
    second = status_event(status, raw, event_id="ev", uid=UID)
    assert first.id == second.id == "status:ev:FAILED"
    assert first.type is EventType.APPLE_EVENT_STATUS
    assert first.data["failures"][0]["error_info"] == {"clientUserIds": ["client-4"]}
    assert first.data["raw"] == raw
