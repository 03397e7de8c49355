"""Recently published vendor ids with a digest of their content: duplicates vs. id collisions.

A vendor id is meant to name one notification, but vendors reuse them: Apple's own documentation
prints USER_MANAGEMENT create, update and retire under one ``notificationId``. So the broker keeps,
for each recently published (``source``, ``id``), the SHA-256 of the input's bytes:

* same id, same digest: a **duplicate** (a redelivery); answer it without a second write;
* same id, different digest: an **id collision**, a different notification. It is published under
  the derived, deterministic id ``{id}~{first 16 hex of SHA-256 of the body}`` (see
  :func:`collision_id`) with the extension ``idcollision`` naming the original id, so the
  idempotent consumer keeps both; a redelivery of the colliding input derives the same id again
  and is a duplicate of it;
* unknown id: **new**.

Concurrent inputs: :meth:`RecentIdWindow.begin` also sees inputs still being published (in
flight), so two different notifications with one id delivered at the same time still get two ids;
the same content delivered twice at the same time is simply published twice (same id, deduped by
the consumer), never answered ``duplicate`` before one of them was acked. Call
:meth:`~RecentIdWindow.finish` for every ``begin`` (``try``/``finally``); in-flight entries are
bounded by the number of requests in progress.

Bounds: at most ``max_entries`` entries and about ``max_bytes`` of memory (ids are counted by
length, plus a fixed per-entry overhead); the oldest entries are evicted first. The window is a
per-process optimisation: after eviction or a restart a redelivery is published again (the
consumer dedupes it), and a colliding notification seen first after a restart gets the plain id
(documented in docs/events.md). Not thread-safe; one event loop uses it.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from typing import NamedTuple

ENTRY_OVERHEAD_BYTES = 256
"""Estimated bytes of one entry besides its strings (dict slot, tuple, str headers, digest)."""

COLLISION_SEPARATOR = "~"
COLLISION_HEX_CHARS = 16


class IdVerdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    COLLISION = "collision"


class IdDecision(NamedTuple):
    """What to do with an input: ``event_id`` is the id to publish (or already published).

    A named tuple (immutable, built once per request on the webhook's path: a frozen
    dataclass's ``__init__`` costs about three times as much)."""

    verdict: IdVerdict
    event_id: str
    original_id: str | None = None
    """The vendor's id when ``event_id`` is derived from it (an id collision), else None."""


def content_digest(body: bytes) -> bytes:
    """SHA-256 of the input exactly as received."""
    return hashlib.sha256(body).digest()


def collision_id(original_id: str, digest: bytes) -> str:
    """``{original_id}~{first 16 hex of the SHA-256 of the body}``: deterministic per content."""
    return f"{original_id}{COLLISION_SEPARATOR}{digest.hex()[:COLLISION_HEX_CHARS]}"


class RecentIdWindow:
    """Bounded map (source, id) -> content digest of recently published events."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._in_flight: dict[tuple[str, str], list[bytes]] = {}

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0 and self._max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The estimated memory the entries hold (always <= ``max_bytes``)."""
        return self._bytes

    def decide(self, source: str, event_id: str, digest: bytes) -> IdDecision:
        """Classify an input whose vendor id is ``event_id`` and content digest is ``digest``,
        against published and in-flight inputs. Pure: registers nothing (see :meth:`begin`)."""
        key = (source, event_id)
        seen = self._entries.get(key)
        if seen == digest:
            return IdDecision(IdVerdict.DUPLICATE, event_id)
        pending = self._in_flight.get(key, ())
        if seen is None and all(other == digest for other in pending):
            return IdDecision(IdVerdict.NEW, event_id)
        derived = collision_id(event_id, digest)
        if self._entries.get((source, derived)) == digest:
            return IdDecision(IdVerdict.DUPLICATE, derived, event_id)
        return IdDecision(IdVerdict.COLLISION, derived, event_id)

    def begin(self, source: str, event_id: str, digest: bytes) -> IdDecision:
        """:meth:`decide`, and mark the input in flight unless it is a duplicate."""
        key = (source, event_id)
        if key not in self._entries and key not in self._in_flight:  # the usual case: new
            self._in_flight[key] = [digest]
            return IdDecision(IdVerdict.NEW, event_id)
        decision = self.decide(source, event_id, digest)
        if decision.verdict is not IdVerdict.DUPLICATE:
            self._in_flight.setdefault((source, decision.event_id), []).append(digest)
        return decision

    def finish(self, source: str, decision: IdDecision, digest: bytes, *, published: bool) -> None:
        """End what :meth:`begin` started; ``published`` = Kafka acked it (then remembered)."""
        if decision.verdict is IdVerdict.DUPLICATE:
            return
        key = (source, decision.event_id)
        pending = self._in_flight.get(key)
        if pending is not None:
            pending.remove(digest)
            if not pending:
                del self._in_flight[key]
        if published:
            self.remember(source, decision.event_id, digest)

    def remember(self, source: str, event_id: str, digest: bytes) -> None:
        """Record a published event (call only after the Kafka ack)."""
        if not self.enabled:
            return
        key = (source, event_id)
        size = _entry_size(key)
        if size > self._max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= size
        self._entries[key] = digest
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            old_key, _ = self._entries.popitem(last=False)
            self._bytes -= _entry_size(old_key)


def _entry_size(key: tuple[str, str]) -> int:
    return len(key[0]) + len(key[1]) + ENTRY_OVERHEAD_BYTES
