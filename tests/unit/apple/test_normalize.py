"""Apple notification -> canonical event (DESIGN.md section 3)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adapters.apple.models import StatusResponse
from adapters.apple.normalize import event_id_of, normalize, status_event
from broker.errors import NormalizationError
from broker.events import (
    DATA_MODELS,
    AssignmentData,
    AssignmentFailedData,
    EventType,
    UserAssociatedData,
    UserData,
    UserFailedData,
)
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


def _with(example: dict[str, Any], **notification: Any) -> dict[str, Any]:
    raw = copy.deepcopy(example)
    raw["notification"].update(notification)
    return raw


_ERROR = {
    "errorNumber": 9709,
    "errorMessage": "There aren't enough assets available to complete this association.",
    "errorInfo": {"serialNumbers": ["97c42a74-c30e-4172-a65f-6e5a5ba3d477"]},
}


def _variants() -> list[dict[str, Any]]:
    """Notifications covering every type normalize() produces and every optional field."""
    variants = [copy.deepcopy(raw) for raw, _, _ in SEED_EXAMPLES]
    for action in ("ASSOCIATE", "DISASSOCIATE", "REVOKE"):
        variants.append(_with(ASSOCIATE, result="FAILURE", type=action, error=_ERROR))
        variants.append(_with(ASSOCIATE, result="FAILURE", type=action))
    for action in ("CREATE", "UPDATE", "RETIRE"):
        variants.append(_with(USER_CREATE, result="FAILURE", type=action, error=_ERROR))
    variants.append(_with(ASSOCIATE, error={"errorNumber": 1}, assignments=[]))
    variants.append(_with(ASSOCIATE, assignments=[{"adamId": "1", "clientUserId": "c", "x": 1}]))
    variants.append(_with(USER_CREATE, users=[{"email": "a@b", "extra": [1]}]))
    variants.append(_with(ASSOCIATE, result="PARTIAL"))
    variants.append({**ASSET_COUNT, "notificationType": "UNLIMITED_ASSET"})
    return variants


@pytest.mark.parametrize("raw", _variants())
def test_data_is_exactly_the_json_form_of_the_types_model(raw: dict[str, Any]) -> None:
    """The webhook builds ``data`` without the data models (one validation pass): it must be
    what the type's model dumps, field for field and in the same order (same Kafka bytes)."""
    event = normalize(raw, raw_json=orjson.dumps(raw))
    model = DATA_MODELS[event.type].model_validate(event.data)
    assert orjson.dumps(model.model_dump(mode="json")) == orjson.dumps(event.data)


@pytest.mark.parametrize(
    ("example", "action", "failed_type", "model"),
    [
        (ASSOCIATE, "ASSOCIATE", EventType.ASSIGNMENT_FAILED, AssignmentFailedData),
        (ASSOCIATE, "DISASSOCIATE", EventType.ASSIGNMENT_FAILED, AssignmentFailedData),
        (ASSOCIATE, "REVOKE", EventType.ASSIGNMENT_FAILED, AssignmentFailedData),
        (USER_CREATE, "CREATE", EventType.USER_FAILED, UserFailedData),
        (USER_CREATE, "UPDATE", EventType.USER_FAILED, UserFailedData),
        (USER_CREATE, "RETIRE", EventType.USER_FAILED, UserFailedData),
    ],
)
def test_failure_result_is_a_failure_type_with_action_result_and_error(
    example: dict[str, Any], action: str, failed_type: EventType, model: Any
) -> None:
    event = normalize(_with(example, result="FAILURE", type=action, error=_ERROR))
    assert event.type is failed_type
    assert event.vendortype.endswith(f"/{action}")
    data = event.typed_data()
    assert isinstance(data, model)
    assert (data.action, data.result) == (action, "FAILURE")
    assert data.error is not None
    assert data.error.error_number == 9709
    assert data.error.error_info == _ERROR["errorInfo"]
    assert data.event_id == example["notification"]["eventId"]


@pytest.mark.parametrize("result", ["PARTIAL", "success", "", None])
def test_any_other_result_is_forwarded_as_unknown(result: str | None) -> None:
    for example in (ASSOCIATE, USER_CREATE):
        raw = _with(example, result=result)
        if result is None:
            del raw["notification"]["result"]
        event = normalize(raw)
        assert event.type is EventType.UNKNOWN
        assert event.data == {"raw": raw}


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


_FAILED_STATUS = {
    "eventStatus": "FAILED",
    "eventType": "ASSOCIATE",
    "numCompleted": 14,
    "numRequested": 16,
    "failures": [
        {"errorNumber": 9609, "errorMessage": "x", "errorInfo": {"clientUserIds": ["client-4"]}}
    ],
}


def test_status_event_id_is_deterministic_and_failed_is_a_failure_type() -> None:
    raw = _FAILED_STATUS
    status = StatusResponse.model_validate(raw)
    first = status_event(status, raw, event_id="ev", uid=UID)
    second = status_event(status, raw, event_id="ev", uid=UID)
    assert first.id == second.id == "status:ev:FAILED"
    assert first.type is EventType.ASSIGNMENT_FAILED
    data = first.typed_data()
    assert isinstance(data, AssignmentFailedData)
    assert (data.action, data.result, data.event_id) == ("ASSOCIATE", "FAILED", "ev")
    assert data.error is not None
    assert data.error.error_info == {"clientUserIds": ["client-4"]}
    assert first.data["raw"] == raw


@pytest.mark.parametrize(
    ("raw", "event_type"),
    [
        ({**_FAILED_STATUS, "eventType": "RETIRE"}, EventType.USER_FAILED),
        ({"eventStatus": "COMPLETE", "eventType": "CREATE"}, EventType.APPLE_EVENT_STATUS),
        ({**_FAILED_STATUS, "eventType": "TRANSFER"}, EventType.UNKNOWN),
        ({"eventStatus": "CANCELLED", "eventType": "ASSOCIATE"}, EventType.UNKNOWN),
        ({"eventStatus": "NOT_FOUND", "failures": [{"errorNumber": 9708}]}, EventType.UNKNOWN),
    ],
)
def test_status_outcome_rule(raw: dict[str, Any], event_type: EventType) -> None:
    event = status_event(StatusResponse.model_validate(raw), raw, event_id="ev", uid=UID)
    assert event.type is event_type
    event.typed_data()


@pytest.mark.parametrize(
    "change",
    [
        {"notificationId": "n" * 129},
        {"uId": "1" * 65},
        {"notificationType": "T" * 65},
    ],
)
def test_ids_longer_than_their_documented_limit_are_schema_violations(
    change: dict[str, Any],
) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize({**ASSET_COUNT, **change})
    assert info.value.reason == "schema"
    with pytest.raises(NormalizationError):
        normalize(_with(ASSOCIATE, eventId="e" * 129))
    with pytest.raises(NormalizationError):
        normalize(_with(ASSOCIATE, assignments=[{"adamId": "1", "serialNumber": "s" * 257}]))
    with pytest.raises(NormalizationError):
        normalize(_with(USER_CREATE, users=[{"clientUserId": "c" * 257}]))
