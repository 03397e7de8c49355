"""What the state topic holds about Apple syncs, and which partition it lives in.

Two kinds of entries, both in the state-topic partition of the location's key
``apple/sync/{tenant}`` (so the instance owning that partition sees all of them):

* ``apple/sync/{tenant}`` (:class:`LocationRecord`), written only by the location's owner: stored
  ``sinceVersionId`` per data set, the sync in progress (so a crash resumes it), the last completed
  sync, the open gap and the owner's heartbeat (``alive_at``) and clean stop (``stopped_at``).
* ``apple/gap/{tenant}/{instance}#{n}`` (:class:`GapReport`), written by any instance whose webhook
  answered Apple non-2xx for that tenant: the latest failed answer. ``#{n}`` is the smallest
  number that puts the key in the same partition as ``apple/sync/{tenant}`` (Kafka's default
  partitioner, murmur2), so no custom partitioning is needed to co-locate them.
* ``apple/manual/{tenant}#{n}`` (:class:`ManualSync`), written by ``mdm-broker apple sync``: the
  versions a manual sync reached and the stored versions it started from. The owner adopts a
  version only where its own is still the one the manual sync started from (a compare-and-set:
  every change up to it was published), then tombstones the entry. Co-located like gap reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

SYNC_PREFIX = "apple/sync/"
GAP_PREFIX = "apple/gap/"
MANUAL_PREFIX = "apple/manual/"
PREFIX = "apple/"
MAX_SALT = 100_000


def sync_key(tenant: str) -> str:
    return f"{SYNC_PREFIX}{tenant}"


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java and aiokafka alike) gives ``key``."""
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def gap_key(tenant: str, instance: str, partitions: int) -> str:
    """The report key of ``instance`` for ``tenant``, in the partition of the tenant's record."""
    return _colocated(f"{GAP_PREFIX}{tenant}/{instance}", tenant, partitions)


def manual_key(tenant: str, partitions: int) -> str:
    """The key of a manual sync's result for ``tenant``, in the partition of its record."""
    return _colocated(f"{MANUAL_PREFIX}{tenant}", tenant, partitions)


def _colocated(stem: str, tenant: str, partitions: int) -> str:
    target = partition_of(sync_key(tenant), partitions)
    for salt in range(MAX_SALT):
        key = f"{stem}#{salt}"
        if partition_of(key, partitions) == target:
            return key
    raise RuntimeError("no co-located key found")  # pragma: no cover - 1/partitions per try


def tenant_of_manual_key(key: str) -> str | None:
    if not key.startswith(MANUAL_PREFIX):
        return None
    tenant, sep, _ = key[len(MANUAL_PREFIX) :].rpartition("#")
    return tenant if sep and tenant else None


def tenant_of_gap_key(key: str) -> str | None:
    if not key.startswith(GAP_PREFIX):
        return None
    tenant, sep, _ = key[len(GAP_PREFIX) :].rpartition("/")
    return tenant if sep and tenant else None


@dataclass
class Gap:
    """A window in which deliveries may have been lost; synced once ``to + horizon`` passed."""

    since: float
    to: float
    reason: str  # "gap" (non-2xx answers) or "restart" (no broker running)

    def merged(self, other: Gap) -> Gap:
        reason = "restart" if "restart" in (self.reason, other.reason) else self.reason
        return Gap(min(self.since, other.since), max(self.to, other.to), reason)


@dataclass
class SyncRun:
    """A sync in progress: data sets whose new version is stored are in ``done``."""

    reason: str
    started: float
    done: list[str] = field(default_factory=list)


@dataclass
class LocationRecord:
    tenant: str
    versions: dict[str, str] = field(default_factory=dict)
    synced_through: float | None = None
    last_sync: float | None = None
    alive_at: float | None = None
    stopped_at: float | None = None
    owner: str | None = None
    run: SyncRun | None = None
    gap: Gap | None = None

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> LocationRecord | None:
        """Parse a stored value; None when it is not a location record (logged by the caller)."""
        if not isinstance(value, dict) or not isinstance(value.get("tenant"), str):
            return None
        try:
            run = value.get("run")
            gap = value.get("gap")
            versions = value.get("versions") or {}
            return cls(
                tenant=value["tenant"],
                versions={str(k): str(v) for k, v in versions.items() if isinstance(v, str)},
                synced_through=_num(value.get("synced_through")),
                last_sync=_num(value.get("last_sync")),
                alive_at=_num(value.get("alive_at")),
                stopped_at=_num(value.get("stopped_at")),
                owner=value.get("owner") if isinstance(value.get("owner"), str) else None,
                run=(
                    SyncRun(str(run["reason"]), float(run["started"]), list(run.get("done", [])))
                    if isinstance(run, dict)
                    else None
                ),
                gap=(
                    Gap(float(gap["since"]), float(gap["to"]), str(gap["reason"]))
                    if isinstance(gap, dict)
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def last_alive(self) -> float | None:
        stamps = [t for t in (self.alive_at, self.stopped_at) if t is not None]
        return max(stamps) if stamps else None

    def adopt(self, manual: ManualSync) -> list[str]:
        """Take the versions a manual sync reached where this record still has the version it
        started from (else this record's own sync moved on: kept). Returns the data sets taken."""
        taken = []
        for dataset, version in manual.versions.items():
            current = self.versions.get(dataset)
            if current == manual.base.get(dataset) and version != current:
                self.versions[dataset] = version
                taken.append(dataset)
        return taken

    def add_gap(self, gap: Gap) -> None:
        """Open (or widen) the gap unless a completed sync already covers it."""
        if self.synced_through is not None and gap.to <= self.synced_through:
            return
        self.gap = gap if self.gap is None else self.gap.merged(gap)


@dataclass
class GapReport:
    tenant: str
    instance: str
    since: float
    to: float

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> GapReport | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                str(value["tenant"]),
                str(value["instance"]),
                float(value["since"]),
                float(value["to"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class ManualSync:
    """What ``mdm-broker apple sync`` reached: ``versions`` per data set synced, ``base`` the
    stored versions it started from (a data set absent: none was stored)."""

    tenant: str
    base: dict[str, str]
    versions: dict[str, str]

    def to_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> ManualSync | None:
        if not isinstance(value, dict) or not isinstance(value.get("tenant"), str):
            return None
        base, versions = value.get("base"), value.get("versions")
        if not isinstance(base, dict) or not isinstance(versions, dict):
            return None
        return cls(
            value["tenant"],
            {str(k): v for k, v in base.items() if isinstance(v, str)},
            {str(k): v for k, v in versions.items() if isinstance(v, str)},
        )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
