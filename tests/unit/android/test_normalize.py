"""EMM notification -> canonical event: every type, ids, keys, raw kept, poison detection."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adapters.android.normalize import normalize_notification, notification_id
from broker.errors import NormalizationError
from broker.events import (
    AppApprovalChangedData,
    AppAvailabilityChangedData,
    AppInstallFailedData,
    AppPermissionsChangedData,
    AppProductData,
    DeviceEnrolledData,
    DeviceReportUpdatedData,
    EventType,
    RawOnlyData,
    Vendor,
    decode_event,
    encode_event,
)
from simulators.android.notifications import ALL_TYPES, generate, make_notification

ENTERPRISE = "LC04ebqs0z"
MILLIS = "1700000000123"


def _n(kind: str, **event: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "enterpriseId": ENTERPRISE,
        "timestampMillis": MILLIS,
        "notificationType": kind,
    }
    doc.update(event)
    return doc


EXPECTED_TYPES = {
    "productApproval": EventType.APP_APPROVAL_CHANGED,
    "installFailure": EventType.APP_INSTALL_FAILED,
    "appUpdate": EventType.APP_UPDATED,
    "newPermissions": EventType.APP_PERMISSIONS_CHANGED,
    "appRestricionsSchemaChange": EventType.APP_CONFIG_SCHEMA_CHANGED,
    "productAvailabilityChange": EventType.APP_AVAILABILITY_CHANGED,
    "newDevice": EventType.DEVICE_ENROLLED,
    "deviceReportUpdate": EventType.DEVICE_REPORT_UPDATED,
    "testNotification": EventType.TEST,
    "unknown": EventType.UNKNOWN,
}


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_every_type_maps_to_its_canonical_type_and_keeps_raw(kind: str) -> None:
    raw = make_notification(kind, ENTERPRISE, 7, 1_700_000_000_123, random.Random(1))
    original = copy.deepcopy(raw)
    event = normalize_notification(raw)
    assert event.type is EXPECTED_TYPES[kind]
    assert event.vendortype == kind
    assert event.vendor is Vendor.ANDROID
    assert event.tenant == ENTERPRISE
    assert event.source == f"/android/enterprises/{ENTERPRISE}"
    assert event.time == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert event.data["raw"] == original
    assert raw == original  # input untouched
    event.typed_data()  # the data matches the type's published model
    assert decode_event(encode_event(event)) == event


SPARSE = [  # optional fields absent: the model's defaults must come out the same
    _n("installFailure", installFailureEvent={"productId": "app:x"}),
    _n("newPermissions", newPermissionsEvent={"productId": "app:x"}),
    _n("productApproval", productApprovalEvent={"productId": "app:x"}),
    _n("productAvailabilityChange", productAvailabilityChangeEvent={"productId": "app:x"}),
    _n("newDevice", newDeviceEvent={"deviceId": "d1"}),
    _n("deviceReportUpdate", deviceReportUpdateEvent={"deviceId": "d1"}),
    _n(
        "deviceReportUpdate",
        deviceReportUpdateEvent={
            "deviceId": "d1",
            "report": {"appState": [{}, {"packageName": "p", "keyedAppState": [{"key": "k"}]}]},
        },
    ),
]


@pytest.mark.parametrize(
    "notification",
    [*generate(len(ALL_TYPES) * 3, enterprises=2, seed=3), *SPARSE],
    ids=lambda n: str(n["notificationType"]),
)
def test_data_is_field_for_field_what_the_types_model_dumps(notification: dict[str, Any]) -> None:
    """normalize builds ``data`` without the model: the same fields, values and order as
    ``model_dump(mode="json")`` of the type's model, hence the same Kafka bytes."""
    event = normalize_notification(notification)
    dumped = event.typed_data().model_dump(mode="json")
    assert orjson.dumps(dumped) == orjson.dumps(event.data)  # key order too, at every level


def test_product_approval_fields() -> None:
    event = normalize_notification(
        _n("productApproval", productApprovalEvent={"productId": "app:a.b", "approved": "approved"})
    )
    data = event.typed_data()
    assert isinstance(data, AppApprovalChangedData)
    assert (data.product_id, data.approved) == ("app:a.b", "approved")
    assert event.partitionkey == f"android:{ENTERPRISE}:app:a.b"
    assert event.subject == "app:a.b"


def test_install_failure_keyed_by_device() -> None:
    event = normalize_notification(
        _n(
            "installFailure",
            installFailureEvent={
                "productId": "app:a.b",
                "deviceId": "3a4b",
                "userId": "u1",
                "failureReason": "timeout",
                "failureDetails": "slow",
            },
        )
    )
    data = event.typed_data()
    assert isinstance(data, AppInstallFailedData)
    assert (data.device_id, data.user_id, data.failure_reason, data.failure_details) == (
        "3a4b",
        "u1",
        "timeout",
        "slow",
    )
    assert event.partitionkey == f"android:{ENTERPRISE}:3a4b"
    assert event.subject == "3a4b"


def test_product_only_types_and_the_api_misspelling() -> None:
    update = normalize_notification(_n("appUpdate", appUpdateEvent={"productId": "app:x"}))
    schema = normalize_notification(
        _n("appRestricionsSchemaChange", appRestrictionsSchemaChangeEvent={"productId": "app:y"})
    )
    for event, product in ((update, "app:x"), (schema, "app:y")):
        data = event.typed_data()
        assert isinstance(data, AppProductData)
        assert data.product_id == product
    assert schema.type is EventType.APP_CONFIG_SCHEMA_CHANGED


def test_new_permissions_and_availability() -> None:
    perms = normalize_notification(
        _n(
            "newPermissions",
            newPermissionsEvent={
                "productId": "app:x",
                "requestedPermissions": ["a", "b"],
                "approvedPermissions": ["a"],
            },
        )
    ).typed_data()
    assert isinstance(perms, AppPermissionsChangedData)
    assert (perms.requested_permissions, perms.approved_permissions) == (["a", "b"], ["a"])
    avail = normalize_notification(
        _n(
            "productAvailabilityChange",
            productAvailabilityChangeEvent={"productId": "app:x", "availabilityStatus": "removed"},
        )
    ).typed_data()
    assert isinstance(avail, AppAvailabilityChangedData)
    assert avail.availability_status == "removed"


def test_new_device_and_device_report_with_keyed_app_states() -> None:
    device = normalize_notification(
        _n(
            "newDevice",
            newDeviceEvent={
                "userId": "u",
                "deviceId": "d1",
                "managementType": "managedProfile",
                "dpcPackageName": "com.dpc",
            },
        )
    ).typed_data()
    assert isinstance(device, DeviceEnrolledData)
    assert (device.device_id, device.management_type, device.dpc_package_name) == (
        "d1",
        "managedProfile",
        "com.dpc",
    )
    report_event = normalize_notification(
        _n(
            "deviceReportUpdate",
            deviceReportUpdateEvent={
                "userId": "u",
                "deviceId": "d1",
                "report": {
                    "lastUpdatedTimestampMillis": "1700000000000",
                    "appState": [
                        {
                            "packageName": "com.crm",
                            "keyedAppState": [
                                {
                                    "key": "k",
                                    "stateTimestampMillis": "1699999999000",
                                    "severity": "severityError",
                                    "message": "boom",
                                    "data": "{}",
                                }
                            ],
                        }
                    ],
                },
            },
        )
    )
    report = report_event.typed_data()
    assert isinstance(report, DeviceReportUpdatedData)
    assert report.last_updated_timestamp_millis == 1_700_000_000_000
    (app,) = report.app_states
    assert app.product_id == "app:com.crm"
    assert app.keyed_app_state == [
        {
            "key": "k",
            "severity": "severityError",
            "message": "boom",
            "data": "{}",
            "state_timestamp_millis": 1_699_999_999_000,
        }
    ]
    assert report_event.partitionkey == f"android:{ENTERPRISE}:d1"


def test_test_unknown_and_newer_types_are_forwarded_raw() -> None:
    test = normalize_notification(_n("testNotification"))
    assert test.type is EventType.TEST
    assert isinstance(test.typed_data(), RawOnlyData)
    assert test.partitionkey == f"android:{ENTERPRISE}:-"
    newer = normalize_notification(_n("enterpriseUpgrade", enterpriseUpgradeEvent={"x": 1}))
    assert newer.type is EventType.UNKNOWN
    assert newer.vendortype == "enterpriseUpgrade"
    assert newer.data["raw"]["enterpriseUpgradeEvent"] == {"x": 1}


def test_missing_notification_type_is_inferred_from_the_event_object() -> None:
    raw = _n("x", appUpdateEvent={"productId": "app:z"})
    del raw["notificationType"]
    event = normalize_notification(raw)
    assert (event.type, event.vendortype) == (EventType.APP_UPDATED, "appUpdate")


def test_redelivery_gets_the_same_id_and_key_regardless_of_json_key_order() -> None:
    (n,) = generate(1, types=("installFailure",), seed=3)
    reordered = orjson.loads(orjson.dumps(dict(reversed(list(n.items())))))
    first, again = normalize_notification(n), normalize_notification(reordered)
    assert first.id == again.id == notification_id(n)
    assert first.partitionkey == again.partitionkey
    # numeric vs string int64 is the same notification too
    numeric = dict(n, timestampMillis=int(n["timestampMillis"]))
    assert normalize_notification(numeric).id == first.id


def test_different_content_gives_different_ids() -> None:
    notifications = generate(500, seed=5)
    assert len({notification_id(n) for n in notifications}) == 500
    a = _n("appUpdate", appUpdateEvent={"productId": "app:a"})
    assert notification_id(a) != notification_id(dict(a, timestampMillis="1700000000124"))
    assert notification_id(a) != notification_id(dict(a, enterpriseId="other"))
    assert notification_id(a) != notification_id(dict(a, appUpdateEvent={"productId": "app:b"}))


@pytest.mark.parametrize(
    ("raw", "reason", "fragment"),
    [
        ("not an object", "malformed", "not a JSON object"),
        (
            {"timestampMillis": MILLIS, "notificationType": "testNotification"},
            "schema",
            "enterpriseId",
        ),
        (
            {"enterpriseId": ENTERPRISE, "notificationType": "testNotification"},
            "schema",
            "timestampMillis",
        ),
        (_n("testNotification", timestampMillis="soon"), "schema", "timestampMillis"),
        (_n("appUpdate"), "schema", "appUpdateEvent"),
        (_n("productApproval", productApprovalEvent={"approved": "x"}), "schema", "productId"),
        (
            _n(
                "newPermissions",
                newPermissionsEvent={"productId": "p", "requestedPermissions": "a"},
            ),
            "schema",
            "requestedPermissions",
        ),
        (
            _n("deviceReportUpdate", deviceReportUpdateEvent={"deviceId": "d", "report": []}),
            "schema",
            "report",
        ),
    ],
)
def test_unusable_notifications_raise_normalization_error(
    raw: Any, reason: str, fragment: str
) -> None:
    with pytest.raises(NormalizationError) as caught:
        normalize_notification(raw)
    assert caught.value.reason == reason
    assert fragment in str(caught.value)
