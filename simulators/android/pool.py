"""The simulator's notification store: pending pool, sets in flight, ack deadline, redelivery.

Behaviour modelled on Google's documentation of pullNotificationSet:

* Pending notifications are handed out in sets of at most ``max_set_size``; concurrent pullers
  split the backlog (each takes its share of what is pending, by the number of pulls in flight).
* A delivered set must be acknowledged within ``ack_deadline_s``; when the deadline passes, its
  notifications return to the back of the pending pool and are delivered again in a *new* set with a new id,
  possibly to another puller. An ack after the deadline is accepted and ignored (counted).
* Pending notifications older than ``retention_s`` are dropped (Pub/Sub retention policy).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Notification = dict[str, Any]


@dataclass
class _Item:
    notification: Notification
    enqueued_at: float
    deliveries: int = 0


@dataclass
class _InFlight:
    set_id: str
    items: list[_Item]
    delivered_at: float
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class AckRecord:
    """One acknowledged set: when (monotonic and wall clock) and what it contained."""

    set_id: str
    acked_at: float
    acked_at_wall: float
    delivered_at: float
    notifications: list[Notification]


class AckOutcome(Enum):
    ACKED = "acked"
    ALREADY_ACKED = "already_acked"
    LATE = "late"
    UNKNOWN = "unknown"


@dataclass
class PoolStats:
    enqueued: int = 0
    delivered_sets: int = 0
    delivered_notifications: int = 0
    acked_sets: int = 0
    acked_notifications: int = 0
    expired_sets: int = 0
    expired_notifications: int = 0
    redelivered_notifications: int = 0
    late_acks: int = 0
    unknown_acks: int = 0
    dropped_notifications: int = 0
    empty_pulls: int = 0


@dataclass
class NotificationPool:
    """All state of the simulated notification feed. Use from one event loop."""

    ack_deadline_s: float = 20.0
    max_set_size: int = 100
    retention_s: float = 7 * 24 * 3600.0
    stats: PoolStats = field(default_factory=PoolStats)
    acked: list[AckRecord] = field(default_factory=list)
    #: Monotonic clock of enqueue times, retention and hold deadlines (injectable for tests; the
    #: ack deadline itself is a timer of the event loop).
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._pending: deque[_Item] = deque()
        self._in_flight: dict[str, _InFlight] = {}
        self._expired_ids: set[str] = set()
        self._acked_ids: set[str] = set()
        self._available = asyncio.Event()
        self._pullers = 0
        self._seq = itertools.count(1)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return sum(len(s.items) for s in self._in_flight.values())

    @property
    def active_pulls(self) -> int:
        return self._pullers

    def enqueue(self, notifications: Iterable[Notification]) -> int:
        now = self.clock()
        count = 0
        for n in notifications:
            self._pending.append(_Item(n, now))
            count += 1
        self.stats.enqueued += count
        if self._pending:
            self._available.set()
        return count

    async def pull(self, wait: bool, hold_s: float) -> tuple[str | None, list[Notification]]:
        """Take a set: at once, or (``wait``) when notifications are pending or ``hold_s`` passed."""
        self._pullers += 1
        try:
            deadline = self.clock() + hold_s
            self._drop_expired_retention()
            while wait and not self._pending:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                self._available.clear()
                try:
                    await asyncio.wait_for(self._available.wait(), remaining)
                except TimeoutError:
                    break
            return self._take()
        finally:
            self._pullers -= 1

    def _take(self) -> tuple[str | None, list[Notification]]:
        if not self._pending:
            self.stats.empty_pulls += 1
            return None, []
        share = math.ceil(len(self._pending) / max(1, self._pullers))
        size = max(1, min(self.max_set_size, share))
        items = [self._pending.popleft() for _ in range(min(size, len(self._pending)))]
        if not self._pending:
            self._available.clear()
        set_id = f"{next(self._seq)}-{uuid.uuid4().hex[:12]}"
        now = self.clock()
        entry = _InFlight(set_id, items, now)
        entry.timer = asyncio.get_running_loop().call_later(
            self.ack_deadline_s, self._expire, set_id
        )
        self._in_flight[set_id] = entry
        for item in items:
            if item.deliveries > 0:
                self.stats.redelivered_notifications += 1
            item.deliveries += 1
        self.stats.delivered_sets += 1
        self.stats.delivered_notifications += len(items)
        return set_id, [item.notification for item in items]

    def ack(self, set_id: str) -> AckOutcome:
        entry = self._in_flight.pop(set_id, None)
        if entry is None:
            if set_id in self._acked_ids:
                return AckOutcome.ALREADY_ACKED
            if set_id in self._expired_ids:
                self.stats.late_acks += 1
                return AckOutcome.LATE
            self.stats.unknown_acks += 1
            return AckOutcome.UNKNOWN
        if entry.timer is not None:
            entry.timer.cancel()
        self._acked_ids.add(set_id)
        self.stats.acked_sets += 1
        self.stats.acked_notifications += len(entry.items)
        self.acked.append(
            AckRecord(
                set_id,
                self.clock(),
                time.time(),
                entry.delivered_at,
                [item.notification for item in entry.items],
            )
        )
        return AckOutcome.ACKED

    def expire_all_now(self) -> int:
        """Expire every set in flight at once (as if their deadline passed); returns how many."""
        ids = list(self._in_flight)
        for set_id in ids:
            self._expire(set_id)
        return len(ids)

    def _expire(self, set_id: str) -> None:
        entry = self._in_flight.pop(set_id, None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        self._expired_ids.add(set_id)
        self.stats.expired_sets += 1
        self.stats.expired_notifications += len(entry.items)
        self._pending.extend(entry.items)
        self._available.set()

    def _drop_expired_retention(self) -> None:
        cutoff = self.clock() - self.retention_s
        while self._pending and self._pending[0].enqueued_at < cutoff:
            self._pending.popleft()
            self.stats.dropped_notifications += 1

    def close(self) -> None:
        """Cancel every deadline timer (the pool is being discarded)."""
        for entry in self._in_flight.values():
            if entry.timer is not None:
                entry.timer.cancel()
