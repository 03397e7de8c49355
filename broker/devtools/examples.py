"""One realistic example event per canonical type, for the event catalogue and the tests.

The ``raw`` payloads follow the vendors' documented shapes (../shared/VENDOR_NOTES.md); the ids and
keys follow the rules in :mod:`broker.events`. Times are fixed so the catalogue is reproducible.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from adapters.apple.syncevents import Dataset, id_basis, synced_event
from adapters.kapua.models import Notification, Operation
from adapters.kapua.normalize import progress_event, terminal_event, vanished_event
from broker.events import (
    AppApprovalChangedData,
    AppAvailabilityChangedData,
    AppInstallFailedData,
    AppleEventStatusData,
    AppleUser,
    AppPermissionsChangedData,
    AppProductData,
    AppState,
    AssetCountChangedData,
    Assignment,
    AssignmentData,
    AssignmentFailedData,
    CanonicalEvent,
    CommandError,
    DeviceCommandData,
    DeviceEnrolledData,
    DeviceReportUpdatedData,
    DeviceStatusReportedData,
    DeviceUsageLogData,
    EnterpriseUpgradedData,
    EventType,
    PubsubInfo,
    RawOnlyData,
    SyncInfo,
    UserAssociatedData,
    UserData,
    UserFailedData,
    Vendor,
    VendorErrorInfo,
    android_event_id,
    android_key,
    apple_key,
    make_event,
)

_T = datetime(2026, 11, 21, 9, 30, 0, 123000, tzinfo=UTC)
UID = "2049025000431439"
ENTERPRISE = "LC00abc123"
SCOPE = "AQ"
DEVICE = "UVjeGkGVT3A"


def _apple(
    notification_type: str,
    body: dict[str, Any],
    event_type: EventType,
    data_cls: Any,
    **fields: Any,
) -> CanonicalEvent:
    digest = hashlib.sha256(event_type.value.encode()).hexdigest()
    notification_id = (
        f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
    )
    raw = {
        "notification": body,
        "notificationId": notification_id,
        "notificationType": notification_type,
        "uId": UID,
    }
    return make_event(
        id=notification_id,
        vendor=Vendor.APPLE,
        tenant=UID,
        type=event_type,
        vendortype=notification_type
        + (
            f"/{body['type']}"
            if notification_type in ("ASSET_MANAGEMENT", "USER_MANAGEMENT")
            else ""
        ),
        partitionkey=apple_key(UID),
        data=data_cls(raw=raw, **fields),
        time=_T,
    )


def _android(
    notification_type: str,
    event_field: str | None,
    body: dict[str, Any],
    event_type: EventType,
    data: Any,
    entity: str | None,
) -> CanonicalEvent:
    millis = "1795253400123"
    raw: dict[str, Any] = {
        "enterpriseId": ENTERPRISE,
        "timestampMillis": millis,
        "notificationType": notification_type,
    }
    if event_field is not None:
        raw[event_field] = body
    return make_event(
        id=android_event_id(ENTERPRISE, notification_type, millis, raw),
        vendor=Vendor.ANDROID,
        tenant=ENTERPRISE,
        type=event_type,
        vendortype=notification_type,
        partitionkey=android_key(ENTERPRISE, entity),
        data=data(raw),
        time=_T,
        subject=entity,
    )


AMAPI_DEVICE = "3a6f1c2e9b7d4e01"
AMAPI_DEVICE_NAME = f"enterprises/{ENTERPRISE}/devices/{AMAPI_DEVICE}"


def _pubsub(notification_type: str, message_id: str) -> PubsubInfo:
    return PubsubInfo(
        message_id=message_id,
        publish_time="2026-11-21T09:30:00.123Z",
        attributes={"notificationType": notification_type},
    )


def _amapi(
    notification_type: str,
    message_id: str,
    event_type: EventType,
    data: Any,
    device: str | None = AMAPI_DEVICE,
) -> CanonicalEvent:
    """An AMAPI notification (Pub/Sub message) mapped as adapters/android/amapi_normalize.py does."""
    return make_event(
        id=message_id,
        vendor=Vendor.ANDROID,
        tenant=ENTERPRISE,
        type=event_type,
        vendortype=notification_type,
        partitionkey=android_key(ENTERPRISE, device),
        data=data,
        time=_T,
        subject=device,
    )


def _amapi_examples(ev: dict[EventType, CanonicalEvent]) -> None:
    device = {
        "name": AMAPI_DEVICE_NAME,
        "userName": f"enterprises/{ENTERPRISE}/users/u4e01",
        "managementMode": "DEVICE_OWNER",
        "state": "ACTIVE",
        "appliedState": "ACTIVE",
        "policyName": f"enterprises/{ENTERPRISE}/policies/default",
        "appliedPolicyName": f"enterprises/{ENTERPRISE}/policies/default",
        "appliedPolicyVersion": "3",
        "lastStatusReportTime": "2026-11-21T09:29:59.000Z",
    }
    ev[EventType.DEVICE_STATUS_REPORTED] = _amapi(
        "STATUS_REPORT",
        "1771945674189602",
        EventType.DEVICE_STATUS_REPORTED,
        DeviceStatusReportedData(
            raw=device,
            device_id=AMAPI_DEVICE,
            user_name=device["userName"],
            management_mode="DEVICE_OWNER",
            state="ACTIVE",
            applied_state="ACTIVE",
            policy_name=device["policyName"],
            applied_policy_name=device["appliedPolicyName"],
            applied_policy_version="3",
            last_status_report_time=device["lastStatusReportTime"],
            pubsub=_pubsub("STATUS_REPORT", "1771945674189602"),
        ),
    )
    for message_id, et, error in (
        ("1771945674189603", EventType.DEVICE_COMMAND_COMPLETED, None),
        (
            "1771945674189604",
            EventType.DEVICE_COMMAND_FAILED,
            {"code": 9, "message": "The device is not reachable."},
        ),
    ):
        operation: dict[str, Any] = {
            "name": f"{AMAPI_DEVICE_NAME}/operations/1795253391042",
            "metadata": {
                "@type": "type.googleapis.com/google.android.devicemanagement.v1.Command",
                "type": "LOCK",
                "createTime": "2026-11-21T09:29:31.042Z",
            },
            "done": True,
        }
        if error is not None:
            operation["error"] = error
        ev[et] = _amapi(
            "COMMAND",
            message_id,
            et,
            DeviceCommandData(
                raw=operation,
                operation_name=operation["name"],
                operation_id="1795253391042",
                device_id=AMAPI_DEVICE,
                command_type="LOCK",
                done=True,
                error=None if error is None else CommandError(**error),
                pubsub=_pubsub("COMMAND", message_id),
            ),
        )
    item = {
        "eventId": "4031",
        "eventTime": "2026-11-21T09:28:12.000Z",
        "eventType": "KEYGUARD_DISMISSED",
        "keyguardDismissedEvent": {},
    }
    batch = {
        "device": AMAPI_DEVICE_NAME,
        "user": f"enterprises/{ENTERPRISE}/users/u4e01",
        "retrievalTime": "2026-11-21T09:30:00.000Z",
        "usageLogEvents": [item],
    }
    usage = _amapi(
        "USAGE_LOGS",
        "1771945674189605:0",
        EventType.DEVICE_USAGE_LOGGED,
        DeviceUsageLogData(
            raw=batch,
            device_id=AMAPI_DEVICE,
            user_name=batch["user"],
            event_id="4031",
            event_type="KEYGUARD_DISMISSED",
            event_time=item["eventTime"],
            event=item,
            retrieval_time=batch["retrievalTime"],
            item_index=0,
            item_count=2,
            pubsub=_pubsub("USAGE_LOGS", "1771945674189605"),
        ),
    )
    ev[EventType.DEVICE_USAGE_LOGGED] = usage
    upgrade = {"enterprise": f"enterprises/{ENTERPRISE}", "upgradeState": "UPGRADE_STATE_SUCCEEDED"}
    ev[EventType.ENTERPRISE_UPGRADED] = _amapi(
        "ENTERPRISE_UPGRADE",
        "1771945674189606",
        EventType.ENTERPRISE_UPGRADED,
        EnterpriseUpgradedData(
            raw=upgrade,
            enterprise_id=ENTERPRISE,
            upgrade_state="UPGRADE_STATE_SUCCEEDED",
            pubsub=_pubsub("ENTERPRISE_UPGRADE", "1771945674189606"),
        ),
        device=None,
    )


_SINCE = "5c7b8f2a-0c39-4a4f-9d64-3f4a1e2b7c10"
_VERSION = "8e1f0a3b-2d4c-4e6f-9a7b-1c2d3e4f5a6b"


def _synced() -> dict[EventType, CanonicalEvent]:
    """Sync results, built by the Apple adapter's own mapping (:mod:`adapters.apple.syncevents`)."""
    sync = SyncInfo(reason="gap", version_id=_VERSION, since_version_id=_SINCE, started=_T)
    assets_sync = SyncInfo(reason="gap", version_id=_VERSION, started=_T)
    assignment = {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": "C02XK1ZJJG5J"}
    user = {
        "clientUserId": "client-1",
        "email": "client-1@apple.com",
        "idHash": "Jsd4B4WF7O7ZvI0AlTOabCDEF2s=",
        "status": "Associated",
    }
    asset = {
        "adamId": "408709785",
        "pricingParam": "STDQ",
        "productType": "App",
        "assignedCount": 12,
        "availableCount": 38,
        "retiredCount": 0,
        "totalCount": 50,
        "deviceAssignable": True,
        "revocable": True,
        "supportedPlatforms": ["iOS", "macOS"],
    }
    cases: list[tuple[Dataset, dict[str, Any], SyncInfo]] = [
        ("assignments", assignment, sync),
        ("users", user, sync),
        ("assets", asset, assets_sync),
    ]
    events = [
        synced_event(
            UID,
            dataset,
            record,
            sync=info,
            basis=id_basis(dataset, info.since_version_id, info.version_id),
            time=_T,
        )
        for dataset, record, info in cases
    ]
    return {event.type: event for event in events}


def example_events() -> dict[EventType, CanonicalEvent]:
    """One example per :class:`EventType`."""
    assignments = [
        {"adamId": "408709785", "pricingParam": "STDQ", "serialNumber": "C02XK1ZJJG5J"},
        {"adamId": "408709785", "pricingParam": "STDQ", "clientUserId": "client-1"},
    ]
    canonical_assignments = [
        Assignment(adam_id="408709785", pricing_param="STDQ", serial_number="C02XK1ZJJG5J"),
        Assignment(adam_id="408709785", pricing_param="STDQ", client_user_id="client-1"),
    ]
    users = [
        {
            "clientUserId": "client-1",
            "email": "client-1@example.com",
            "idHash": "NqKnz2Pv",
            "status": "Associated",
        }
    ]
    canonical_users = [
        AppleUser(
            client_user_id="client-1",
            email="client-1@example.com",
            id_hash="NqKnz2Pv",
            status="Associated",
        )
    ]
    ev: dict[EventType, CanonicalEvent] = {}
    ev[EventType.ASSET_COUNT_CHANGED] = _apple(
        "ASSET_COUNT",
        {"adamId": "408709785", "countDelta": -12, "pricingParam": "STDQ"},
        EventType.ASSET_COUNT_CHANGED,
        AssetCountChangedData,
        adam_id="408709785",
        pricing_param="STDQ",
        count_delta=-12,
    )
    for kind, et in (
        ("ASSOCIATE", EventType.ASSIGNMENT_ASSOCIATED),
        ("DISASSOCIATE", EventType.ASSIGNMENT_DISASSOCIATED),
        ("REVOKE", EventType.ASSIGNMENT_REVOKED),
    ):
        ev[et] = _apple(
            "ASSET_MANAGEMENT",
            {
                "assignments": assignments,
                "eventId": "954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
                "result": "SUCCESS",
                "type": kind,
            },
            et,
            AssignmentData,
            event_id="954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
            result="SUCCESS",
            assignments=canonical_assignments,
        )
    for kind, et in (
        ("CREATE", EventType.USER_CREATED),
        ("UPDATE", EventType.USER_UPDATED),
        ("RETIRE", EventType.USER_RETIRED),
    ):
        ev[et] = _apple(
            "USER_MANAGEMENT",
            {"eventId": "3f1d2c4b-aaaa", "result": "SUCCESS", "type": kind, "users": users},
            et,
            UserData,
            event_id="3f1d2c4b-aaaa",
            result="SUCCESS",
            users=canonical_users,
        )
    ev[EventType.USER_ASSOCIATED] = _apple(
        "USER_ASSOCIATED",
        {"associatedUsers": users},
        EventType.USER_ASSOCIATED,
        UserAssociatedData,
        users=canonical_users,
    )
    error_raw = {
        "errorNumber": 9709,
        "errorMessage": "There aren't enough assets available to complete this association.",
        "errorInfo": {"serialNumbers": ["C02XK1ZJJG5J"]},
    }
    error = VendorErrorInfo(
        error_number=9709,
        error_message="There aren't enough assets available to complete this association.",
        error_info={"serialNumbers": ["C02XK1ZJJG5J"]},
    )
    ev[EventType.ASSIGNMENT_FAILED] = _apple(
        "ASSET_MANAGEMENT",
        {
            "assignments": assignments[:1],
            "error": error_raw,
            "eventId": "954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
            "result": "FAILURE",
            "type": "ASSOCIATE",
        },
        EventType.ASSIGNMENT_FAILED,
        AssignmentFailedData,
        action="ASSOCIATE",
        result="FAILURE",
        error=error,
        event_id="954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
        assignments=canonical_assignments[:1],
    )
    user_error = {"errorNumber": 9716, "errorMessage": "A registered user already exists."}
    ev[EventType.USER_FAILED] = _apple(
        "USER_MANAGEMENT",
        {
            "error": user_error,
            "eventId": "3f1d2c4b-bbbb",
            "result": "FAILURE",
            "type": "CREATE",
            "users": [{"clientUserId": "client-1", "email": "client-1@example.com"}],
        },
        EventType.USER_FAILED,
        UserFailedData,
        action="CREATE",
        result="FAILURE",
        error=VendorErrorInfo(error_number=9716, error_message=user_error["errorMessage"]),
        event_id="3f1d2c4b-bbbb",
        users=[AppleUser(client_user_id="client-1", email="client-1@example.com")],
    )
    status_raw = {
        "eventStatus": "COMPLETE",
        "eventType": "ASSOCIATE",
        "numCompleted": 16,
        "numRequested": 16,
        "uId": UID,
    }
    ev[EventType.APPLE_EVENT_STATUS] = make_event(
        id="status:954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10:COMPLETE",
        vendor=Vendor.APPLE,
        tenant=UID,
        type=EventType.APPLE_EVENT_STATUS,
        vendortype="EVENT_STATUS",
        partitionkey=apple_key(UID),
        data=AppleEventStatusData(
            raw=status_raw,
            event_id="954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10",
            event_status="COMPLETE",
            event_type="ASSOCIATE",
            num_completed=16,
            num_requested=16,
        ),
        time=_T,
    )
    ev.update(_synced())
    ev[EventType.TEST] = _apple("TEST_NOTIFICATION", {}, EventType.TEST, RawOnlyData)
    product = "app:com.google.android.gm"
    ev[EventType.APP_APPROVAL_CHANGED] = _android(
        "productApproval",
        "productApprovalEvent",
        {"productId": product, "approved": "approved"},
        EventType.APP_APPROVAL_CHANGED,
        lambda raw: AppApprovalChangedData(raw=raw, product_id=product, approved="approved"),
        product,
    )
    ev[EventType.APP_INSTALL_FAILED] = _android(
        "installFailure",
        "installFailureEvent",
        {
            "productId": product,
            "deviceId": "3a6f1c2e9b7d4e01",
            "userId": "g1234567890",
            "failureReason": "timeout",
            "failureDetails": "download timed out",
        },
        EventType.APP_INSTALL_FAILED,
        lambda raw: AppInstallFailedData(
            raw=raw,
            product_id=product,
            device_id="3a6f1c2e9b7d4e01",
            user_id="g1234567890",
            failure_reason="timeout",
            failure_details="download timed out",
        ),
        "3a6f1c2e9b7d4e01",
    )
    ev[EventType.APP_UPDATED] = _android(
        "appUpdate",
        "appUpdateEvent",
        {"productId": product},
        EventType.APP_UPDATED,
        lambda raw: AppProductData(raw=raw, product_id=product),
        product,
    )
    ev[EventType.APP_PERMISSIONS_CHANGED] = _android(
        "newPermissions",
        "newPermissionsEvent",
        {
            "productId": product,
            "requestedPermissions": ["android.permission.CAMERA"],
            "approvedPermissions": [],
        },
        EventType.APP_PERMISSIONS_CHANGED,
        lambda raw: AppPermissionsChangedData(
            raw=raw,
            product_id=product,
            requested_permissions=["android.permission.CAMERA"],
            approved_permissions=[],
        ),
        product,
    )
    ev[EventType.APP_CONFIG_SCHEMA_CHANGED] = _android(
        "appRestricionsSchemaChange",
        "appRestrictionsSchemaChangeEvent",
        {"productId": product},
        EventType.APP_CONFIG_SCHEMA_CHANGED,
        lambda raw: AppProductData(raw=raw, product_id=product),
        product,
    )
    ev[EventType.APP_AVAILABILITY_CHANGED] = _android(
        "productAvailabilityChange",
        "productAvailabilityChangeEvent",
        {"productId": product, "availabilityStatus": "unpublished"},
        EventType.APP_AVAILABILITY_CHANGED,
        lambda raw: AppAvailabilityChangedData(
            raw=raw, product_id=product, availability_status="unpublished"
        ),
        product,
    )
    ev[EventType.DEVICE_ENROLLED] = _android(
        "newDevice",
        "newDeviceEvent",
        {
            "userId": "g1234567890",
            "deviceId": "3a6f1c2e9b7d4e01",
            "managementType": "managedDevice",
            "dpcPackageName": "com.example.dpc",
        },
        EventType.DEVICE_ENROLLED,
        lambda raw: DeviceEnrolledData(
            raw=raw,
            device_id="3a6f1c2e9b7d4e01",
            user_id="g1234567890",
            management_type="managedDevice",
            dpc_package_name="com.example.dpc",
        ),
        "3a6f1c2e9b7d4e01",
    )
    keyed = [{"key": "vpn_status", "severity": "info", "data": "connected", "message": "ok"}]
    ev[EventType.DEVICE_REPORT_UPDATED] = _android(
        "deviceReportUpdate",
        "deviceReportUpdateEvent",
        {
            "userId": "g1234567890",
            "deviceId": "3a6f1c2e9b7d4e01",
            "report": {
                "lastUpdatedTimestampMillis": "1795253399000",
                "appState": [{"packageName": "com.example.vpn", "keyedAppState": keyed}],
            },
        },
        EventType.DEVICE_REPORT_UPDATED,
        lambda raw: DeviceReportUpdatedData(
            raw=raw,
            device_id="3a6f1c2e9b7d4e01",
            user_id="g1234567890",
            last_updated_timestamp_millis=1795253399000,
            app_states=[AppState(product_id="com.example.vpn", keyed_app_state=keyed)],
        ),
        "3a6f1c2e9b7d4e01",
    )
    _amapi_examples(ev)
    progress_row = {
        "type": "managementOperationNotification",
        "id": "RGoRWw9Pkhc",
        "scopeId": SCOPE,
        "createdOn": "2026-11-21T09:30:00.331Z",
        "createdBy": "Ag",
        "operationId": "cjmXXKvLUY8",
        "progress": 5,
        "resource": "download",
        "sentOn": "2026-11-21T09:30:00.123Z",
        "status": "RUNNING",
    }
    progress = Notification.model_validate(progress_row)
    ev[EventType.OPERATION_PROGRESSED] = progress_event(SCOPE, DEVICE, progress, progress_row)
    for status in ("COMPLETED", "FAILED"):
        op = {
            "type": "deviceManagementOperation",
            "id": "cjmXXKvLUY8",
            "scopeId": SCOPE,
            "deviceId": DEVICE,
            "operationId": "I-1DnL467js",
            "appId": "DEPLOY-V2",
            "action": "EXECUTE",
            "resource": "DOWNLOAD",
            "startedOn": "2026-11-21T09:29:58.842Z",
            "endedOn": "2026-11-21T09:30:00.123Z",
            "status": status,
            "log": "2026-11-21T09:30:00.123Z - done\n",
        }
        event = terminal_event(Operation.model_validate(op), op)
        ev[event.type] = event
    stale_op = {
        "type": "deviceManagementOperation",
        "id": "dQw4w9WgXcQ",
        "scopeId": SCOPE,
        "deviceId": DEVICE,
        "operationId": "J-2EoM578kt",
        "appId": "DEPLOY-V2",
        "action": "EXECUTE",
        "resource": "DOWNLOAD",
        "startedOn": "2026-11-21T08:00:00.000Z",
        "modifiedOn": "2026-11-21T09:30:00.123Z",
        "status": "STALE",
        "log": "",
    }
    ev[EventType.OPERATION_STALE] = terminal_event(Operation.model_validate(stale_op), stale_op)
    not_found = {
        "type": "entityNotFoundExceptionInfo",
        "httpErrorCode": 404,
        "message": "The entity of type deviceManagementOperation with id/name kVx3pQ9LmN0 was "
        "not found.",
        "kapuaErrorCode": "ENTITY_NOT_FOUND",
        "entityType": "deviceManagementOperation",
        "entityId": "kVx3pQ9LmN0",
    }
    ev[EventType.OPERATION_VANISHED] = vanished_event(
        SCOPE, DEVICE, "kVx3pQ9LmN0", "RUNNING", not_found, when=_T
    )
    ev[EventType.UNKNOWN] = _apple(
        "SUBSCRIPTION_COUNT", {"subscriptionId": "s-1"}, EventType.UNKNOWN, RawOnlyData
    )
    return ev
