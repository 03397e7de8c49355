"""Records read by a sync (Get Assignments / Get Users / Get Assets) -> canonical events.

The event id is ``sync:{dataset}:{32 hex}``, the first 128 bits of SHA-256 over the canonical JSON
(sorted keys) of ``[uId, dataset, identity, record, basis]``:

* ``uId`` and ``dataset`` and the record's identity (assignment: adamId, pricingParam and
  serialNumber or clientUserId; user: clientUserId; asset: adamId, pricingParam) name *what* the
  fact is about; the whole ``record`` as Apple returned it names its *state*. A record whose state
  changes gets a new id; reading the same state again gives the same id (key order and
  whitespace do not matter: canonical JSON).
* ``basis`` says *which read* reported the state, so that a state that comes back (an assignment
  removed and added again, a count that returns to an earlier value: A -> B -> A) is a new fact
  and not swallowed by the consumer's dedupe:

  - assignments and users read with ``sinceVersionId``: the ``sinceVersionId`` sent. Such a
    record is in the answer only because it changed after that version, so a repeated read
    (e.g. a sync resumed after a crash) repeats the ids, and a later change of the record
    appears in a later read with a later ``sinceVersionId``, hence with a new id;
  - assignments and users read whole (first sync, or Apple refused the stored version with 9721):
    the constant ``full``, so a full read repeats the ids of every record whose state an earlier
    full read already published (no duplicates for an idempotent consumer after a 9721 fallback);
  - assets (Get Assets has no ``sinceVersionId``, counts can return to an earlier value): the
    ``versionId`` of the read's first page. Re-reading unchanged data gives the same ids; after
    any change of the location every asset's counts get new ids (a few records per location).

Not in the id: the sync's time, reason or the ``versionId`` of delta reads (they change between
syncs of unchanged data, which would republish everything).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from broker.errors import NormalizationError
from broker.events import (
    AssetCountsSyncedData,
    AssignmentSyncedData,
    CanonicalEvent,
    EventType,
    SyncInfo,
    UserSyncedData,
    Vendor,
    apple_key,
    canonical_json,
    make_event,
)

Dataset = Literal["assignments", "users", "assets"]
DATASETS: tuple[Dataset, ...] = ("assignments", "users", "assets")
FULL_BASIS = "full"
SCHEMA = "schema"

_VENDORTYPES: dict[Dataset, str] = {
    "assignments": "SYNC/ASSIGNMENTS",
    "users": "SYNC/USERS",
    "assets": "SYNC/ASSETS",
}


def _text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) and value else None


def identity(dataset: Dataset, record: Mapping[str, Any]) -> list[str | None]:
    """What the record is about; raises NormalizationError(``schema``) when that is missing."""
    if dataset == "users":
        user = _text(record, "clientUserId")
        if user is None:
            raise NormalizationError(SCHEMA, "synced user without clientUserId")
        return [user]
    adam_id = _text(record, "adamId")
    if adam_id is None:
        raise NormalizationError(SCHEMA, f"synced {dataset} record without adamId")
    ident = [adam_id, _text(record, "pricingParam")]
    if dataset == "assignments":
        serial, user = _text(record, "serialNumber"), _text(record, "clientUserId")
        if (serial is None) == (user is None):
            raise NormalizationError(
                SCHEMA, "synced assignment needs exactly one of serialNumber and clientUserId"
            )
        ident += [serial, user]
    return ident


def synced_event_id(uid: str, dataset: Dataset, record: Mapping[str, Any], basis: str) -> str:
    """The deterministic id described in the module docstring."""
    doc = [uid, dataset, identity(dataset, record), dict(record), basis]
    return f"sync:{dataset}:{hashlib.sha256(canonical_json(doc)).hexdigest()[:32]}"


def id_basis(dataset: Dataset, since_version_id: str | None, version_id: str | None) -> str:
    """The ``basis`` part of the id for a read (see the module docstring)."""
    if dataset == "assets":
        return f"version:{version_id}" if version_id else FULL_BASIS
    return f"since:{since_version_id}" if since_version_id else FULL_BASIS


def _int(record: Mapping[str, Any], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def synced_event(
    uid: str,
    dataset: Dataset,
    record: dict[str, Any],
    *,
    sync: SyncInfo,
    basis: str,
    time: datetime | None = None,
) -> CanonicalEvent:
    """One record of a sync read as ``mdm.assignment.synced``, ``mdm.user.synced`` or
    ``mdm.asset.counts_synced``. Raises NormalizationError(``schema``) for an unusable record."""
    event_id = synced_event_id(uid, dataset, record, basis)
    try:
        if dataset == "assignments":
            serial = _text(record, "serialNumber")
            user = _text(record, "clientUserId")
            data: Any = AssignmentSyncedData(
                raw=record,
                sync=sync,
                adam_id=str(record["adamId"]),
                pricing_param=_text(record, "pricingParam"),
                serial_number=serial,
                client_user_id=user,
            )
            etype, subject = EventType.ASSIGNMENT_SYNCED, serial or user
        elif dataset == "users":
            data = UserSyncedData(
                raw=record,
                sync=sync,
                client_user_id=str(record["clientUserId"]),
                status=_text(record, "status"),
                email=_text(record, "email"),
                id_hash=_text(record, "idHash"),
                invite_code=_text(record, "inviteCode"),
                managed_apple_id=_text(record, "managedAppleId"),
            )
            etype, subject = EventType.USER_SYNCED, data.client_user_id
        else:
            data = AssetCountsSyncedData(
                raw=record,
                sync=sync,
                adam_id=str(record["adamId"]),
                pricing_param=_text(record, "pricingParam"),
                product_type=_text(record, "productType"),
                assigned_count=_int(record, "assignedCount"),
                available_count=_int(record, "availableCount"),
                retired_count=_int(record, "retiredCount"),
                total_count=_int(record, "totalCount"),
            )
            etype, subject = EventType.ASSET_COUNTS_SYNCED, data.adam_id
    except ValidationError as exc:
        raise NormalizationError(SCHEMA, str(exc.errors()[:3])) from exc
    return make_event(
        id=event_id,
        vendor=Vendor.APPLE,
        tenant=uid,
        type=etype,
        vendortype=_VENDORTYPES[dataset],
        partitionkey=apple_key(uid),
        data=data,
        time=time or datetime.now(UTC),
        subject=subject,
    )
