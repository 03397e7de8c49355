"""AMAPI resources as the Android Management API publishes them to Pub/Sub (VENDOR_NOTES.md 2.8).

Shapes follow the AMAPI REST reference: Device (``name`` ``enterprises/{e}/devices/{d}``,
``managementMode``, ``state``, ``policyName``, ``enrollmentTime``, ``lastStatusReportTime``, ...),
Operation (``name`` ``.../operations/{op}``, ``done``, ``metadata`` of the Command, ``error`` as a
google.rpc.Status), BatchUsageLogEvents (``device``, ``user``, ``retrievalTime``,
``usageLogEvents[]`` sorted by ``eventTime``) and EnterpriseUpgradeEvent (``enterprise``,
``upgradeState``). Field values are made up but plausible; generation is deterministic per seed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

ENROLLMENT = "ENROLLMENT"
STATUS_REPORT = "STATUS_REPORT"
COMMAND = "COMMAND"
USAGE_LOGS = "USAGE_LOGS"
ENTERPRISE_UPGRADE = "ENTERPRISE_UPGRADE"
ALL_TYPES = (ENROLLMENT, STATUS_REPORT, COMMAND, USAGE_LOGS, ENTERPRISE_UPGRADE)

COMMAND_TYPES = ("LOCK", "REBOOT", "RESET_PASSWORD", "RELINQUISH_OWNERSHIP", "CLEAR_APP_DATA")
USAGE_EVENT_TYPES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("KEYGUARD_DISMISSED", "keyguardDismissedEvent", {}),
    ("ADB_SHELL_COMMAND", "adbShellCommandEvent", {"shellCmd": "ls /sdcard"}),
    ("APP_PROCESS_START", "appProcessStartEvent", {"processName": "com.example.app", "uid": 10123}),
    ("KEYGUARD_SECURED", "keyguardSecuredEvent", {}),
)


def _rfc3339(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _now() -> datetime:
    return datetime.now(UTC)


def device(
    enterprise: str, device_id: str, *, state: str = "ACTIVE", policy: str = "default"
) -> dict[str, Any]:
    """A Device resource (as in ENROLLMENT and STATUS_REPORT notifications)."""
    now = _now()
    return {
        "name": f"enterprises/{enterprise}/devices/{device_id}",
        "userName": f"enterprises/{enterprise}/users/u{device_id[-6:]}",
        "managementMode": "DEVICE_OWNER",
        "state": state,
        "appliedState": state,
        "policyName": f"enterprises/{enterprise}/policies/{policy}",
        "appliedPolicyName": f"enterprises/{enterprise}/policies/{policy}",
        "appliedPolicyVersion": "3",
        "enrollmentTime": _rfc3339(now - timedelta(minutes=5)),
        "lastStatusReportTime": _rfc3339(now),
        "lastPolicySyncTime": _rfc3339(now),
        "apiLevel": 34,
        "hardwareInfo": {"brand": "Google", "model": "Pixel 8", "serialNumber": f"SN{device_id}"},
        "softwareInfo": {"androidVersion": "14", "securityPatchLevel": "2026-11-05"},
        "ownership": "COMPANY_OWNED",
    }


def operation(
    enterprise: str,
    device_id: str,
    operation_id: str,
    *,
    command_type: str = "LOCK",
    error: dict[str, Any] | None = None,
    done: bool = True,
) -> dict[str, Any]:
    """The Operation of a device command (COMMAND notification)."""
    op: dict[str, Any] = {
        "name": f"enterprises/{enterprise}/devices/{device_id}/operations/{operation_id}",
        "metadata": {
            "@type": "type.googleapis.com/google.android.devicemanagement.v1.Command",
            "type": command_type,
            "createTime": _rfc3339(_now() - timedelta(seconds=30)),
            "userName": f"enterprises/{enterprise}/users/u{device_id[-6:]}",
        },
        "done": done,
    }
    if error is not None:
        op["error"] = error
    return op


def usage_logs(
    enterprise: str, device_id: str, count: int, first_event_id: int = 1
) -> dict[str, Any]:
    """A BatchUsageLogEvents with ``count`` usage-log events sorted by eventTime."""
    now = _now()
    events = []
    for i in range(count):
        event_type, field, payload = USAGE_EVENT_TYPES[i % len(USAGE_EVENT_TYPES)]
        events.append(
            {
                "eventId": str(first_event_id + i),
                "eventTime": _rfc3339(now - timedelta(seconds=count - i)),
                "eventType": event_type,
                field: dict(payload),
            }
        )
    return {
        "device": f"enterprises/{enterprise}/devices/{device_id}",
        "user": f"enterprises/{enterprise}/users/u{device_id[-6:]}",
        "retrievalTime": _rfc3339(now),
        "usageLogEvents": events,
    }


def enterprise_upgrade(enterprise: str, state: str = "UPGRADE_STATE_SUCCEEDED") -> dict[str, Any]:
    """An EnterpriseUpgradeEvent."""
    return {"enterprise": f"enterprises/{enterprise}", "upgradeState": state}


def generate(
    count: int,
    *,
    enterprises: int = 3,
    devices: int = 50,
    types: tuple[str, ...] = ALL_TYPES,
    seed: int | None = None,
    first_seq: int = 0,
) -> list[tuple[str, dict[str, Any]]]:
    """``count`` (notificationType, resource) pairs cycling through ``types``."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        seq = first_seq + i
        kind = types[seq % len(types)]
        enterprise = f"LC0{rng.randrange(enterprises):07d}"
        device_id = f"3{rng.randrange(devices):015x}"
        if kind in (ENROLLMENT, STATUS_REPORT):
            resource = device(enterprise, device_id)
        elif kind == COMMAND:
            failed = rng.random() < 0.1
            resource = operation(
                enterprise,
                device_id,
                f"{seq}{rng.randrange(10**6):06d}",
                command_type=rng.choice(COMMAND_TYPES),
                error={"code": 9, "message": "The device is not reachable."} if failed else None,
            )
        elif kind == USAGE_LOGS:
            resource = usage_logs(enterprise, device_id, rng.randint(1, 3), seq * 10)
        elif kind == ENTERPRISE_UPGRADE:
            resource = enterprise_upgrade(enterprise)
        else:
            resource = {"name": f"enterprises/{enterprise}", "note": "unmapped type"}
        out.append((kind, resource))
    return out
