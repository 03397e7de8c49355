"""State records of the Kapua adapter in the compacted state topic, and how they merge.

Every watched operation has up to three records, **one key per kind**, so that no kind can replace
another, whatever the order of writes and whenever compaction runs:

* ``kapua/op/{scopeId}/{operation id}/watch~{salt}``: a registration (from discovery or an explicit
  watch request), written by any instance so that the operation's owner starts watching it;
* ``.../cursor~{salt}``: ``count`` and ``seen`` notification ids, written **only by the owner** and
  only after the events of those ids were acked by Kafka; and ``suspects``: the COMPLETED/FAILED
  rows that failed validation and wait for the operation record before they are dead-lettered
  (raw row and detail by id), so that a restart or another owner still dead-letters them after
  Kapua deleted them; and ``held``: the valid COMPLETED/FAILED row that waits for the record to
  say whether it closed the operation (terminal event) or ended a phase (progress), so that a
  restart or another owner still publishes it, folded or not, after Kapua deleted it;
* ``.../done~{salt}``: the operation is closed (terminal, stale, vanished or unknown-status event
  acked); the owner then tombstones the watch and cursor keys; the done key itself is tombstoned
  after ``done_retention_s``.

The operation key ``kapua/op/{scopeId}/{operation id}`` (:func:`op_key`) decides ownership: Kafka's
default partitioner (murmur2) places it in one partition and the instance assigned that partition
in the consumer group owns the operation (:func:`partition_for`). The three record keys carry a
small deterministic ``salt`` chosen so that murmur2 puts them in that same partition
(:func:`record_key`): the owner reads all of an operation's records, and nothing else has to know
about explicit partitions. Keys written before this layout (one key per operation, the kind in the
value) are still read.

Merge rule when loading: per operation, ``done`` wins over ``cursor``, which wins over ``watch``;
a tombstone removes only its own kind.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

PREFIX = "kapua/"
KINDS = ("watch", "cursor", "done")
_RECORD_KEY = re.compile(r"^(kapua/op/[^/]+/[^/]+)/(watch|cursor|done)~[0-9]+$")
_MAX_SALT = 100_000


def op_key(scope_id: str, operation_id: str) -> str:
    """The identity of an operation in memory and for ownership (not itself a record key)."""
    return f"{PREFIX}op/{scope_id}/{operation_id}"


@functools.lru_cache(maxsize=65_536)
def record_key(operation_key: str, kind: str, partitions: int) -> str:
    """The state-topic key of ``kind`` for an operation: same partition as ``operation_key``.

    Deterministic (the smallest salt that lands there), so every write of one kind reuses one key
    and compaction keeps only the newest. Raises ValueError for an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown state record kind {kind!r}")
    if partitions <= 0:
        raise ValueError("the state topic's partition count is needed")
    target = partition_for(operation_key, partitions)
    for salt in range(_MAX_SALT):
        candidate = f"{operation_key}/{kind}~{salt}"
        if partition_for(candidate, partitions) == target:
            return candidate
    raise ValueError(f"no salt maps {operation_key!r} to partition {target}")  # pragma: no cover


def parse_record_key(key: str) -> tuple[str, str | None]:
    """(operation key, kind) of a state key; kind None for the former one-key-per-operation layout."""
    match = _RECORD_KEY.match(key)
    if match is None:
        return key, None
    return match.group(1), match.group(2)


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
    suspects: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    held: dict[str, Any] | None = None  # the held row as Kapua returned it

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
            suspects=_suspects(value.get("suspects")),
            held=_held(value.get("held")),
        )


def _suspects(value: Any) -> dict[str, tuple[dict[str, Any], str]]:
    """``{id: {"row": {...}, "detail": "..."}}`` as written by :func:`cursor_value`; entries of
    another shape are skipped."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for rid, entry in value.items():
        if not isinstance(entry, dict):
            continue
        row, detail = entry.get("row"), entry.get("detail")
        if isinstance(rid, str) and isinstance(row, dict) and isinstance(detail, str):
            out[rid] = (row, detail)
    return out


def _held(value: Any) -> dict[str, Any] | None:
    """``{"row": {...}}`` as written by :func:`cursor_value`; None for another shape."""
    row = value.get("row") if isinstance(value, dict) else None
    return row if isinstance(row, dict) else None


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
    scope_id: str,
    device_id: str,
    operation_id: str,
    count: int,
    seen: list[str],
    suspects: dict[str, tuple[dict[str, Any], str]] | None = None,
    held: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``suspects``: invalid COMPLETED/FAILED rows not yet dead-lettered, id -> (raw row, detail);
    ``held``: the valid COMPLETED/FAILED row not yet published (raw); each written only when
    there is one."""
    value: dict[str, Any] = {
        "kind": "cursor",
        "scope": scope_id,
        "device": device_id,
        "op": operation_id,
        "count": count,
        "seen": seen,
        "at": time.time(),
    }
    if suspects:
        value["suspects"] = {
            rid: {"row": row, "detail": detail} for rid, (row, detail) in suspects.items()
        }
    if held is not None:
        value["held"] = {"row": held}
    return value


def done_value(scope_id: str, device_id: str, operation_id: str, status: str) -> dict[str, Any]:
    return {
        "kind": "done",
        "scope": scope_id,
        "device": device_id,
        "op": operation_id,
        "status": status,
        "at": time.time(),
    }


@dataclass
class OpSlots:
    """The records of one operation, one per kind, as read from the state topic."""

    watch: OpRecord | None = None
    cursor: OpRecord | None = None
    done: OpRecord | None = None

    def resolve(self) -> OpRecord | None:
        """done > cursor > watch (a registration never hides progress or an end)."""
        return self.done or self.cursor or self.watch

    def empty(self) -> bool:
        return self.watch is None and self.cursor is None and self.done is None


def merge(state: dict[str, OpSlots], key: str, value: Any) -> None:
    """Apply one state-topic record (key as stored) to ``state``, keyed by operation key."""
    okey, kind = parse_record_key(key)
    if not okey.startswith(f"{PREFIX}op/"):
        return
    slots = state.get(okey)
    if value is None:
        if slots is None:
            return
        if kind is None:  # tombstone of the former single key: the whole operation is gone
            state.pop(okey, None)
            return
        setattr(slots, kind, None)
        if slots.empty():
            state.pop(okey, None)
        return
    record = OpRecord.from_value(value)
    if record is None or (kind is not None and record.kind != kind):
        return
    if slots is None:
        slots = state[okey] = OpSlots()
    if kind is None and record.kind == "watch" and not slots.empty():
        return  # former layout: a registration never replaced a cursor or a done record
    setattr(slots, record.kind, record)


def resolve_all(state: dict[str, OpSlots]) -> dict[str, OpRecord]:
    """The merged record of every operation (see :meth:`OpSlots.resolve`)."""
    return {k: r for k, slots in state.items() if (r := slots.resolve()) is not None}
