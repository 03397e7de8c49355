"""The simulated Apple side: locations, assets, users, assignments and async events.

Pure state and rules, no HTTP. Mutating operations bump the location's version (``versionId``)
and return the notifications Apple would send (before subscription filtering), chunked to at most
``CHUNK`` elements each, as Apple documents ("a limit of 100 elements in the notification").
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from simulators.apple.errors import error_body
from simulators.apple.stoken import encode_s_token, format_apple_time

CHUNK = 100

DEFAULT_LIMITS: dict[str, int] = {
    "maxAssets": 25,
    "maxUsers": 100,
    "maxNotificationLength": 512,
    "maxRevokeClientUserIds": 100,
    "maxClientUserIds": 1000,
    "maxSerialNumbers": 1000,
    "maxRevokeSerialNumbers": 100,
    "maxRequestPerSecond": 15,
    "maxSubscriptions": 25,
    "maxSubscriptionClientUserIds": 1000,
    "maxMdmNameLength": 100,
    "maxMdmMetadataLength": 255,
    "maxMdmIdLength": 100,
}
NOTIFICATION_TYPES = ("ASSET_MANAGEMENT", "USER_MANAGEMENT", "USER_ASSOCIATED", "ASSET_COUNT")
NEWER_NOTIFICATION_TYPES = ("SUBSCRIPTION_MANAGEMENT", "SUBSCRIPTION_COUNT", "UNLIMITED_ASSET")
"""Listed by Apple's current ClientConfigResponse docs; shapes undocumented. Client config accepts
them (as Apple does); the broker forwards them as ``mdm.unknown``."""
SUBSCRIBABLE_TYPES = NOTIFICATION_TYPES + NEWER_NOTIFICATION_TYPES
ASSIGNMENT_ACTIONS = ("ASSOCIATE", "DISASSOCIATE", "REVOKE")
USER_ACTIONS = ("CREATE", "UPDATE", "RETIRE")


@dataclass
class Asset:
    adam_id: str
    pricing_param: str
    total: int
    product_type: str = "App"
    revocable: bool = True
    device_assignable: bool = True
    assigned: int = 0

    def wire(self) -> dict[str, Any]:
        return {
            "adamId": self.adam_id,
            "pricingParam": self.pricing_param,
            "productType": self.product_type,
            "assignedCount": self.assigned,
            "availableCount": self.total - self.assigned,
            "retiredCount": 0,
            "totalCount": self.total,
            "deviceAssignable": self.device_assignable,
            "revocable": self.revocable,
            "supportedPlatforms": ["iOS", "macOS"],
        }


@dataclass
class User:
    client_user_id: str
    email: str | None
    status: str = "Registered"
    invite_code: str | None = None
    id_hash: str | None = None
    managed_apple_id: str | None = None
    version: int = 0

    def wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"clientUserId": self.client_user_id, "status": self.status}
        for key, value in (
            ("email", self.email),
            ("inviteCode", self.invite_code if self.status == "Registered" else None),
            ("idHash", self.id_hash),
            ("managedAppleId", self.managed_apple_id),
        ):
            if value is not None:
                doc[key] = value
        return doc


@dataclass
class AsyncEvent:
    event_id: str
    event_type: str
    num_requested: int
    status: str = "PENDING"
    num_completed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Location:
    """One location (one sToken)."""

    uid: str
    org_name: str
    token: str
    exp_date: datetime
    revoked: bool = False
    client_config: dict[str, Any] = field(default_factory=dict)
    assets: dict[tuple[str, str], Asset] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    assignments: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    events: dict[str, AsyncEvent] = field(default_factory=dict)
    version: int = 0
    version_ids: dict[str, int] = field(default_factory=dict)

    @property
    def s_token(self) -> str:
        return encode_s_token(self.token, self.exp_date, self.org_name)

    def bump(self) -> int:
        self.version += 1
        return self.version

    def version_id(self) -> str:
        """The ``versionId`` naming the current state of the data set."""
        for vid, number in self.version_ids.items():
            if number == self.version:
                return vid
        vid = str(uuid.uuid4())
        self.version_ids[vid] = self.version
        return vid

    def common(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tokenExpirationDate": format_apple_time(self.exp_date),
            "uId": self.uid,
        }
        if "mdmInfo" in self.client_config:
            doc["mdmInfo"] = self.client_config["mdmInfo"]
        return doc

    def notification(self, notification_type: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "notification": body,
            "notificationId": str(uuid.uuid4()),
            "notificationType": notification_type,
            "uId": self.uid,
        }

    # -- assets -----------------------------------------------------------------------------

    def buy(self, adam_id: str, pricing_param: str, count: int, **attrs: Any) -> dict[str, Any]:
        """Licences bought (count > 0) or refunded (< 0): returns the ASSET_COUNT notification."""
        asset = self.assets.get((adam_id, pricing_param))
        if asset is None:
            asset = Asset(adam_id, pricing_param, 0, **attrs)
            self.assets[(adam_id, pricing_param)] = asset
        asset.total = max(asset.assigned, asset.total + count)
        self.bump()
        body = {"adamId": adam_id, "countDelta": count, "pricingParam": pricing_param}
        return self.notification("ASSET_COUNT", body)

    # -- async events -----------------------------------------------------------------------

    def new_event(self, event_type: str, num_requested: int) -> AsyncEvent:
        event = AsyncEvent(str(uuid.uuid4()), event_type, num_requested)
        self.events[event.event_id] = event
        return event

    def process_manage(
        self,
        event: AsyncEvent,
        assets: Sequence[tuple[str, str]],
        serials: Sequence[str],
        users: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Apply an associate/disassociate; returns its ASSET_MANAGEMENT notifications."""
        kind = event.event_type
        notes: list[dict[str, Any]] = []
        targets = [("serialNumber", s) for s in serials] + [("clientUserId", u) for u in users]
        failed: dict[int, list[tuple[str, str, str, str]]] = {}
        for adam_id, pricing in assets:
            asset = self.assets[(adam_id, pricing)]
            done: list[tuple[str, str, str, str]] = []
            for target_kind, target in targets:
                key = (adam_id, pricing, target_kind, target)
                if target_kind == "clientUserId" and (
                    target not in self.users or self.users[target].status == "Retired"
                ):
                    failed.setdefault(9609, []).append(key)
                    continue
                if kind == "ASSOCIATE":
                    if key not in self.assignments:
                        if asset.assigned >= asset.total:
                            failed.setdefault(9709, []).append(key)
                            continue
                        asset.assigned += 1
                        self.assignments[key] = self.bump()
                elif self.assignments.pop(key, None) is not None:
                    asset.assigned -= 1
                    self.bump()
                done.append(key)
            event.num_completed += len(done)
            notes.extend(self._assignment_notes(event, done, "SUCCESS", None))
        for number, keys in failed.items():
            info = _error_info(keys)
            event.failures.append(error_body(number, errorInfo=info))
            notes.extend(self._assignment_notes(event, keys, "FAILURE", number))
        event.status = "FAILED" if failed else "COMPLETE"
        return notes

    def process_revoke(
        self, event: AsyncEvent, serials: Sequence[str], users: Sequence[str]
    ) -> list[dict[str, Any]]:
        targets = {("serialNumber", s) for s in serials} | {("clientUserId", u) for u in users}
        revoked = [
            key
            for key in list(self.assignments)
            if (key[2], key[3]) in targets and self.assets[(key[0], key[1])].revocable
        ]
        for key in revoked:
            del self.assignments[key]
            self.assets[(key[0], key[1])].assigned -= 1
            self.bump()
        event.num_requested = len(revoked)
        event.num_completed = len(revoked)
        event.status = "COMPLETE"
        return self._assignment_notes(event, revoked, "SUCCESS", None)

    def _assignment_notes(
        self,
        event: AsyncEvent,
        keys: Sequence[tuple[str, str, str, str]],
        result: str,
        error: int | None,
    ) -> list[dict[str, Any]]:
        notes = []
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            body: dict[str, Any] = {
                "assignments": [
                    {"adamId": a, "pricingParam": p, kind: target} for a, p, kind, target in chunk
                ],
                "eventId": event.event_id,
                "result": result,
                "type": event.event_type,
            }
            if error is not None:
                body["error"] = error_body(error, errorInfo=_error_info(chunk))
            notes.append(self.notification("ASSET_MANAGEMENT", body))
        return notes

    def fail_event(
        self, event: AsyncEvent, number: int, targets: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """A ``result: FAILURE`` notification for ``event`` (any action) about ``targets``
        (assignments or users); the event's status becomes FAILED with that error."""
        error = error_body(number)
        event.failures.append(error)
        event.status = "FAILED"
        body: dict[str, Any] = {
            "eventId": event.event_id,
            "result": "FAILURE",
            "type": event.event_type,
            "error": error,
        }
        if event.event_type in ASSIGNMENT_ACTIONS:
            body["assignments"] = list(targets)
            return self.notification("ASSET_MANAGEMENT", body)
        body["users"] = list(targets)
        return self.notification("USER_MANAGEMENT", body)

    # -- users ------------------------------------------------------------------------------

    def process_users(
        self, event: AsyncEvent, users: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Apply a user create/update/retire; returns its USER_MANAGEMENT notifications."""
        ok: list[User] = []
        failed: dict[int, list[str]] = {}
        for spec in users:
            cuid = str(spec["clientUserId"])
            existing = self.users.get(cuid)
            if event.event_type == "CREATE":
                if existing is not None and existing.status != "Retired":
                    failed.setdefault(9716, []).append(cuid)
                    continue
                user = User(cuid, spec.get("email"), invite_code=secrets.token_hex(16))
                self.users[cuid] = user
            elif existing is None:
                failed.setdefault(9609, []).append(cuid)
                continue
            elif event.event_type == "UPDATE":
                user = existing
                if "email" in spec:
                    user.email = spec["email"]
                if spec.get("managedAppleId"):
                    user.managed_apple_id = spec["managedAppleId"]
                    user.status, user.id_hash = "Associated", _id_hash(cuid)
            else:
                user = existing
                user.status = "Retired"
            user.version = self.bump()
            ok.append(user)
        event.num_completed = len(ok)
        notes = []
        for start in range(0, len(ok), CHUNK):
            body: dict[str, Any] = {
                "eventId": event.event_id,
                "result": "SUCCESS",
                "type": event.event_type,
                "users": [u.wire() for u in ok[start : start + CHUNK]],
            }
            notes.append(self.notification("USER_MANAGEMENT", body))
        for number, ids in failed.items():
            event.failures.append(error_body(number, errorInfo={"clientUserIds": ids}))
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                body = {
                    "eventId": event.event_id,
                    "result": "FAILURE",
                    "type": event.event_type,
                    "users": [{"clientUserId": c} for c in chunk],
                    "error": error_body(number, errorInfo={"clientUserIds": chunk}),
                }
                notes.append(self.notification("USER_MANAGEMENT", body))
        event.status = "FAILED" if failed else "COMPLETE"
        return notes

    def accept_invitation(self, client_user_id: str) -> dict[str, Any] | None:
        """The user accepted the invite with a personal Apple ID: USER_ASSOCIATED, or None."""
        user = self.users.get(client_user_id)
        if user is None or user.status != "Registered":
            return None
        user.status, user.id_hash = "Associated", _id_hash(client_user_id)
        user.version = self.bump()
        wire = user.wire()
        wire["inviteCode"] = user.invite_code
        return self.notification("USER_ASSOCIATED", {"associatedUsers": [wire]})


def _id_hash(client_user_id: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, client_user_id).hex[:27] + "="


def _error_info(keys: Iterable[tuple[str, str, str, str]]) -> dict[str, Any]:
    serials: dict[str, None] = {}
    users: dict[str, None] = {}
    assets: dict[tuple[str, str], None] = {}
    for adam_id, pricing, kind, target in keys:
        (serials if kind == "serialNumber" else users)[target] = None
        assets[(adam_id, pricing)] = None
    info: dict[str, Any] = {"assets": [{"adamId": a, "pricingParam": p} for a, p in assets]}
    if serials:
        info["serialNumbers"] = list(serials)
    if users:
        info["clientUserIds"] = list(users)
    return info


def new_location(
    uid: str | None = None,
    org_name: str = "Simulated Org",
    expires_in: timedelta = timedelta(days=365),
) -> Location:
    return Location(
        uid=uid or str(10**15 + secrets.randbelow(9 * 10**15)),
        org_name=org_name,
        token=secrets.token_urlsafe(24),
        exp_date=datetime.now(UTC).replace(microsecond=0) + expires_in,
    )
