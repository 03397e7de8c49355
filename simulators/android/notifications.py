"""Generators of realistic EMM notifications, in the API's JSON shape (int64 as strings).

Every generated notification is unique in content (its timestamp and entity ids include a
sequence number), so each maps to a distinct canonical event id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

Notification = dict[str, Any]

ALL_TYPES = (
    "productApproval",
    "installFailure",
    "appUpdate",
    "newPermissions",
    "appRestricionsSchemaChange",
    "productAvailabilityChange",
    "newDevice",
    "deviceReportUpdate",
    "testNotification",
    "unknown",
)

_PACKAGES = ("com.google.android.gm", "com.example.crm", "com.example.scanner", "org.example.notes")
_PERMISSIONS = (
    "android.permission.CAMERA",
    "android.permission.ACCESS_FINE_LOCATION",
    "android.permission.READ_CONTACTS",
    "android.permission.RECORD_AUDIO",
)


def _header(enterprise_id: str, kind: str, millis: int) -> Notification:
    return {"enterpriseId": enterprise_id, "timestampMillis": str(millis), "notificationType": kind}


def make_notification(
    kind: str, enterprise_id: str, seq: int, millis: int, rng: random.Random
) -> Notification:
    """One notification of ``kind`` (a notificationType), content varied by ``seq`` and ``rng``."""
    n = _header(enterprise_id, kind, millis)
    product = f"app:{rng.choice(_PACKAGES)}.v{seq}"
    device = f"dev{seq:08x}"
    user = f"1{rng.randrange(10**19):019d}"
    builders: dict[str, Callable[[], None]] = {
        "productApproval": lambda: n.update(
            productApprovalEvent={
                "productId": product,
                "approved": rng.choice(["approved", "unapproved", "unknown"]),
            }
        ),
        "installFailure": lambda: n.update(
            installFailureEvent={
                "productId": product,
                "deviceId": device,
                "userId": user,
                "failureReason": rng.choice(["timeout", "unknown"]),
                "failureDetails": f"attempt {seq}",
            }
        ),
        "appUpdate": lambda: n.update(appUpdateEvent={"productId": product}),
        "newPermissions": lambda: n.update(
            newPermissionsEvent={
                "productId": product,
                "requestedPermissions": sorted(rng.sample(_PERMISSIONS, 2)),
                "approvedPermissions": sorted(rng.sample(_PERMISSIONS, 1)),
            }
        ),
        "appRestricionsSchemaChange": lambda: n.update(
            appRestrictionsSchemaChangeEvent={"productId": product}
        ),
        "productAvailabilityChange": lambda: n.update(
            productAvailabilityChangeEvent={
                "productId": product,
                "availabilityStatus": rng.choice(["available", "removed", "unpublished"]),
            }
        ),
        "newDevice": lambda: n.update(
            newDeviceEvent={
                "userId": user,
                "deviceId": device,
                "managementType": rng.choice(["managedDevice", "managedProfile"]),
                "dpcPackageName": "com.example.dpc",
            }
        ),
        "deviceReportUpdate": lambda: n.update(
            deviceReportUpdateEvent={
                "userId": user,
                "deviceId": device,
                "report": {
                    "lastUpdatedTimestampMillis": str(millis - 500),
                    "appState": [
                        {
                            "packageName": rng.choice(_PACKAGES),
                            "keyedAppState": [
                                {
                                    "key": "sync_status",
                                    "stateTimestampMillis": str(millis - 1000),
                                    "severity": rng.choice(["severityInfo", "severityError"]),
                                    "message": f"sync {seq}",
                                    "data": '{"pending": 3}',
                                }
                            ],
                        }
                    ],
                },
            }
        ),
        "testNotification": lambda: None,
        "unknown": lambda: None,
    }
    builders.get(kind, lambda: None)()
    return n


def generate(
    count: int,
    *,
    enterprises: int = 3,
    types: tuple[str, ...] = ALL_TYPES,
    seed: int | None = None,
    start_millis: int | None = None,
    first_seq: int = 0,
) -> list[Notification]:
    """``count`` notifications cycling through ``types`` and ``enterprises`` enterprise ids."""
    rng = random.Random(seed)
    base = start_millis if start_millis is not None else int(time.time() * 1000)
    out: list[Notification] = []
    for i in range(count):
        seq = first_seq + i
        enterprise = f"LC{(seq % max(1, enterprises)):08d}"
        out.append(make_notification(types[seq % len(types)], enterprise, seq, base + seq, rng))
    return out


def make_test_notification(enterprise_id: str, millis: int | None = None) -> Notification:
    """The notification ``sendTestPushNotification`` produces."""
    return _header(enterprise_id, "testNotification", millis or int(time.time() * 1000))
