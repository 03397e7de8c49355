"""The Pub/Sub simulator's state: topics, pull subscriptions, leases, redelivery, retention.

Modelled on Google's documentation of Cloud Pub/Sub pull subscriptions (docs/android.md lists
what is documented and what is an assumption of this simulator):

* A message published to a topic is copied into every subscription of that topic, with a
  ``messageId`` unique in the topic (decimal digits, as Pub/Sub's) and a ``publishTime``.
* ``pull`` hands out up to ``maxMessages`` pending messages, each with a NEW ``ackId`` and a lease
  of the subscription's ``ackDeadlineSeconds``; concurrent pulls split the backlog.
* A lease that passes its deadline without ``acknowledge`` returns the message to the pending
  pool: it is delivered again with the SAME ``messageId`` and a ``deliveryAttempt`` one higher.
* ``modifyAckDeadline`` sets a leased message's deadline to ``now + seconds``; 0 returns it to
  the pool at once (a nack, which also counts as a failed delivery attempt).
* ``acknowledge`` of the current lease removes the message. An ack id whose lease expired is
  accepted too: if the message was not acked yet it is removed (late ack); either way no error.
* Messages unacked for longer than ``retention_s`` since publish are dropped (counted as expired).

All methods are synchronous and use an injectable monotonic ``clock``; the server calls
:meth:`PubsubState.sweep` to fire deadlines and :meth:`PubsubState.changed` to wake long polls.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

MIN_ACK_DEADLINE_S = 0
MAX_ACK_DEADLINE_S = 600
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
LOG_LIMIT = 200_000


class PubsubError(Exception):
    """A request Pub/Sub would refuse: HTTP status, gRPC status name and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _publish_time(wall: float) -> str:
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


@dataclass
class _Message:
    """One message in one subscription."""

    message: dict[str, Any]
    published_at: float
    delivery_attempt: int = 0
    ack_id: str | None = None  # the current lease's ack id
    deadline: float | None = None  # the current lease's deadline (None: pending)
    acked: bool = False

    @property
    def message_id(self) -> str:
        return str(self.message["messageId"])


@dataclass
class Subscription:
    name: str
    topic: str
    ack_deadline_s: float = 10
    retention_s: float = DEFAULT_RETENTION_S
    messages: dict[str, _Message] = field(default_factory=dict)  # by messageId
    pending: deque[str] = field(default_factory=deque)
    leases: dict[str, str] = field(default_factory=dict)  # ack id -> messageId (every issued)
    deadlines: list[tuple[float, str]] = field(default_factory=list)  # heap of (deadline, ack id)

    def resource(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "topic": self.topic,
            "ackDeadlineSeconds": max(1, round(self.ack_deadline_s)),
            "messageRetentionDuration": f"{int(self.retention_s)}s",
        }


@dataclass
class Stats:
    published: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    late_acks: int = 0
    duplicate_acks: int = 0
    nacked: int = 0
    deadline_extensions: int = 0
    lease_expirations: int = 0
    expired: int = 0
    pull_requests: int = 0
    empty_pulls: int = 0


@dataclass(frozen=True)
class AckRecord:
    message_id: str
    notification_type: str | None
    delivery_attempt: int
    acked_at: float  # the state's monotonic clock
    acked_at_wall: float
    late: bool


def _issued_format(ack_id: str) -> bool:
    """Ack ids this simulator issues: ``{random}-{messageId}``; others are refused (400)."""
    head, _, tail = ack_id.rpartition("-")
    return len(head) >= 24 and tail.isdigit()


class PubsubState:
    """Topics and subscriptions of one simulated project. Use from one event loop."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        first_message_id: int | None = None,
    ) -> None:
        self._clock = clock
        self._wall = wall_clock
        self.topics: dict[str, list[str]] = {}  # topic -> subscription names
        self.subscriptions: dict[str, Subscription] = {}
        self.stats = Stats()
        # Bounded logs for the control API (a long-running dev stack must not grow without end).
        self.acked: deque[AckRecord] = deque(maxlen=LOG_LIMIT)
        self.redelivered_ids: deque[str] = deque(maxlen=LOG_LIMIT)
        self.expired_ids: deque[str] = deque(maxlen=LOG_LIMIT)
        start = first_message_id or 10**15 + secrets.randbelow(10**15)
        self._ids = itertools.count(start)
        self._changed = asyncio.Event()
        self._retention_checked = clock()
        self.active_pulls = 0

    # -- admin -------------------------------------------------------------------------------

    def create_topic(self, topic: str) -> None:
        self.topics.setdefault(topic, [])

    def create_subscription(
        self,
        name: str,
        topic: str,
        ack_deadline_s: float = 10,
        retention_s: float | None = None,
        *,
        strict: bool = True,
    ) -> Subscription:
        """A pull subscription. ``strict=False`` (simulator set-up only, never the REST API)
        allows ack deadlines under Pub/Sub's 10 s minimum, so tests run faster."""
        if topic not in self.topics:
            raise PubsubError(404, f"Resource not found (resource={topic.rsplit('/', 1)[-1]}).")
        low = 10 if strict else 0.1
        if not low <= ack_deadline_s <= MAX_ACK_DEADLINE_S:
            raise PubsubError(400, "The ack deadline must be between 10 and 600 seconds.")
        if name in self.subscriptions:
            raise PubsubError(409, "Resource already exists in the project.")
        sub = Subscription(name, topic, ack_deadline_s, retention_s or DEFAULT_RETENTION_S)
        self.subscriptions[name] = sub
        self.topics[topic].append(name)
        return sub

    def subscription(self, name: str) -> Subscription:
        sub = self.subscriptions.get(name)
        if sub is None:
            raise PubsubError(404, f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
        return sub

    # -- publish -----------------------------------------------------------------------------

    def publish(self, topic: str, messages: list[Mapping[str, Any]]) -> list[str]:
        """Publish ``{"data": base64, "attributes": {...}}`` messages; returns their ids."""
        if topic not in self.topics:
            raise PubsubError(404, f"Resource not found (resource={topic.rsplit('/', 1)[-1]}).")
        now, wall = self._clock(), self._wall()
        ids: list[str] = []
        for raw in messages:
            message_id = str(next(self._ids))
            message: dict[str, Any] = {
                "data": raw.get("data", ""),
                "attributes": dict(raw.get("attributes") or {}),
                "messageId": message_id,
                "publishTime": _publish_time(wall),
            }
            for sub_name in self.topics[topic]:
                sub = self.subscriptions[sub_name]
                sub.messages[message_id] = _Message(dict(message), now)
                sub.pending.append(message_id)
            ids.append(message_id)
        self.stats.published += len(ids)
        self._wake()
        return ids

    def publish_json(self, topic: str, resource: Any, attributes: Mapping[str, str]) -> str:
        """Publish the JSON of ``resource`` as AMAPI does (base64 of UTF-8 JSON)."""
        data = base64.b64encode(orjson.dumps(resource)).decode()
        return self.publish(topic, [{"data": data, "attributes": dict(attributes)}])[0]

    # -- pull / ack / modack -----------------------------------------------------------------

    def take(self, name: str, max_messages: int, cap: int) -> list[dict[str, Any]]:
        """Lease up to ``max_messages`` (and ``cap``) pending messages, split among pulls."""
        if max_messages <= 0:
            raise PubsubError(400, "max_messages must be a positive integer.")
        sub = self.subscription(name)
        self.sweep()
        share = math.ceil(len(sub.pending) / max(1, self.active_pulls))
        count = min(max_messages, cap, max(1, share))
        now = self._clock()
        out: list[dict[str, Any]] = []
        while sub.pending and len(out) < count:
            message_id = sub.pending.popleft()
            item = sub.messages.get(message_id)
            if item is None or item.acked or item.deadline is not None:
                continue
            item.delivery_attempt += 1
            item.ack_id = f"{secrets.token_urlsafe(24)}-{message_id}"
            self._set_deadline(sub, item, now + sub.ack_deadline_s)
            sub.leases[item.ack_id] = message_id
            self.stats.delivered += 1
            if item.delivery_attempt > 1:
                self.stats.redelivered += 1
                self.redelivered_ids.append(message_id)
            out.append(
                {
                    "ackId": item.ack_id,
                    "message": dict(item.message),
                    "deliveryAttempt": item.delivery_attempt,
                }
            )
        self.stats.pull_requests += 1
        if not out:
            self.stats.empty_pulls += 1
        return out

    def _lease(self, sub: Subscription, ack_id: str) -> _Message | None:
        message_id = sub.leases.get(ack_id)
        return None if message_id is None else sub.messages.get(message_id)

    def _check_ids(self, sub: Subscription, ack_ids: Any) -> list[str]:
        if not isinstance(ack_ids, list) or not ack_ids:
            raise PubsubError(400, "No ack ids specified.")
        for ack_id in ack_ids:
            if not isinstance(ack_id, str) or not _issued_format(ack_id):
                raise PubsubError(400, "You have passed an invalid ack ID to the service.")
        return ack_ids

    def acknowledge(self, name: str, ack_ids: Any) -> None:
        sub = self.subscription(name)
        self.sweep()
        for ack_id in self._check_ids(sub, ack_ids):
            item = self._lease(sub, ack_id)
            if item is None or item.acked:
                self.stats.duplicate_acks += 1
                continue
            late = item.ack_id != ack_id
            item.acked = True
            item.deadline = None
            self.stats.acked += 1
            if late:
                self.stats.late_acks += 1
            self.acked.append(
                AckRecord(
                    item.message_id,
                    item.message.get("attributes", {}).get("notificationType"),
                    item.delivery_attempt,
                    self._clock(),
                    self._wall(),
                    late,
                )
            )
            del sub.messages[item.message_id]

    def modify_ack_deadline(self, name: str, ack_ids: Any, seconds: Any) -> None:
        sub = self.subscription(name)
        if (
            not isinstance(seconds, int)
            or isinstance(seconds, bool)
            or not MIN_ACK_DEADLINE_S <= seconds <= MAX_ACK_DEADLINE_S
        ):
            raise PubsubError(
                400, "Invalid ack deadline given. The deadline must be between 0 and 600 seconds."
            )
        self.sweep()
        now = self._clock()
        for ack_id in self._check_ids(sub, ack_ids):
            item = self._lease(sub, ack_id)
            if item is None or item.acked or item.ack_id != ack_id:
                continue  # a stale lease: nothing to modify
            if seconds == 0:
                self.stats.nacked += 1
                self._release(sub, item)
            else:
                self.stats.deadline_extensions += 1
                self._set_deadline(sub, item, now + seconds)
        self._wake()

    # -- time --------------------------------------------------------------------------------

    def _release(self, sub: Subscription, item: _Message) -> None:
        item.ack_id = None
        item.deadline = None
        sub.pending.append(item.message_id)

    def _set_deadline(self, sub: Subscription, item: _Message, deadline: float) -> None:
        item.deadline = deadline
        if item.ack_id is not None:
            heapq.heappush(sub.deadlines, (deadline, item.ack_id))

    def sweep(self) -> int:
        """Return expired leases to the pool and drop messages past retention; returns changes."""
        now = self._clock()
        changes = 0
        check_retention = now - self._retention_checked >= 1.0
        if check_retention:
            self._retention_checked = now
        for sub in self.subscriptions.values():
            while sub.deadlines and sub.deadlines[0][0] <= now:
                deadline, ack_id = heapq.heappop(sub.deadlines)
                item = self._lease(sub, ack_id)
                if item is None or item.acked or item.ack_id != ack_id or item.deadline != deadline:
                    continue  # acked, nacked, extended or already redelivered
                self.stats.lease_expirations += 1
                self._release(sub, item)
                changes += 1
            if not check_retention:
                continue
            sub.leases = {a: m for a, m in sub.leases.items() if m in sub.messages}
            for item in list(sub.messages.values()):
                if now - item.published_at > sub.retention_s:
                    del sub.messages[item.message_id]
                    self.stats.expired += 1
                    self.expired_ids.append(item.message_id)
                    changes += 1
        if changes:
            self._wake()
        return changes

    def next_deadline(self) -> float | None:
        """The earliest lease deadline (possibly of a stale lease: then sweeping is a no-op)."""
        heads = [s.deadlines[0][0] for s in self.subscriptions.values() if s.deadlines]
        return min(heads) if heads else None

    def expire_leases_now(self) -> int:
        """Pass the deadline of every lease now (control API); returns how many were released."""
        released = 0
        for sub in self.subscriptions.values():
            for item in sub.messages.values():
                if item.deadline is not None and not item.acked:
                    self.stats.lease_expirations += 1
                    self._release(sub, item)
                    released += 1
        if released:
            self._wake()
        return released

    def pending_count(self, name: str) -> int:
        return len(self.subscription(name).pending)

    def outstanding_count(self, name: str) -> int:
        return sum(1 for i in self.subscription(name).messages.values() if i.deadline is not None)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def changed(self) -> asyncio.Event:
        """An event set at the next publish, release or expiry (for long polls)."""
        return self._changed
