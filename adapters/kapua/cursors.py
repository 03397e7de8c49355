"""State records of the Kapua adapter in the compacted state topic, and how they merge.

One key per watched operation: ``kapua/op/{scopeId}/{operation entity id}``. Its value is one of

* ``{"kind": "watch", ...}``: a registration (from discovery or an explicit watch request),
  written by any instance so that the key's owner starts watching;
* ``{"kind": "cursor", "count": n, "seen": [ids], ...}``: the owner's checkpoint, written only
  after the events of those ids were acked by Kafka;
* ``{"kind": "done", "status": ...}``: the operation is closed (terminal event acked) or gone;
  kept ``done_retention_s`` so late watch requests are ignored, then tombstoned.

Merge rule (used when loading and when a live record arrives): a ``watch`` record never replaces
a ``cursor`` or ``done`` record of the same key (registrations are idempotent); cursor and done
records replace what was there; a tombstone deletes the key.

Ownership: Kafka's default partitioner (murmur2 of the key) places a key in one partition; the
instance assigned that partition in the consumer group owns the key (:func:`partition_for`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

PREFIX = "kapua/"


def op_key(scope_id: str, operation_id: str) -> str:
    return f"{PREFIX}op/{scope_id}/{operation_id}"


def device_key(scope_id: str, device_id: str) -> str:
    """Not stored: only used to split device discovery between instances."""
    return f"{PREFIX}device/{scope_id}/{device_id}"


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner chooses for ``key`` (Java-compatible murmur2)."""
    return int((murmur2(key.encode()) & 0x7FFFFFFF) % partitions)


@dataclass
class OpRecord:
    """The merged state of one operation key."""

    kind: str
    scope_id: str
    device_id: str
    operation_id: str
    count: int = -1
    seen: list[str] = field(default_factory=list)
    status: str | None = None
    at: float = 0.0
    last_raw_kind: str = ""

    @classmethod
    def from_value(cls, value: Any) -> OpRecord | None:
        """Parse a state value; None when it is not a Kapua operation record."""
        if not isinstance(value, dict):
            return None
        kind = value.get("kind")
        scope, device, op = value.get("scope"), value.get("device"), value.get("op")
        if kind not in ("watch", "cursor", "done") or not all(
            isinstance(v, str) and v for v in (scope, device, op)
        ):
            return None
        seen = value.get("seen")
        count = value.get("count")
        status = value.get("status")
        at = value.get("at")
        return cls(
            kind=str(kind),
            scope_id=str(scope),
            device_id=str(device),
            operation_id=str(op),
            count=count if isinstance(count, int) else -1,
            seen=[s for s in seen if isinstance(s, str)] if isinstance(seen, list) else [],
            status=status if isinstance(status, str) else None,
            at=float(at) if isinstance(at, int | float) else 0.0,
            last_raw_kind=str(kind),
        )


def watch_value(scope_id: str, device_id: str, operation_id: str, via: str) -> dict[str, Any]:
    return {
        "kind": "watch",
        "scope": scope_id,
        "device": device_id,
        "op": operation_id,
        "via": via,
        "at": time.time(),
    }


def cursor_value(
    scope_id: str, device_id: str, operation_id: str, count: int, seen: list[str]
) -> dict[str, Any]:
    return {
        "kind": "cursor",
        "scope": scope_id,
        "device": device_id,
        "op": operation_id,
        "count": count,
        "seen": seen,
        "at": time.time(),
    }


def done_value(scope_id: str, device_id: str, operation_id: str, status: str) -> dict[str, Any]:
    return {
        "kind": "done",
        "scope": scope_id,
        "device": device_id,
        "op": operation_id,
        "status": status,
        "at": time.time(),
    }


def merge(state: dict[str, OpRecord], key: str, value: Any) -> None:
    """Apply one state-topic record to ``state`` with the merge rule of the module docstring."""
    if value is None:
        state.pop(key, None)
        return
    record = OpRecord.from_value(value)
    if record is None:
        return
    existing = state.get(key)
    if record.kind == "watch" and existing is not None:
        existing.last_raw_kind = "watch"
        return
    state[key] = record
