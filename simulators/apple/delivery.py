"""Notification delivery as Apple does it: best effort, up to 3 attempts within a window.

Each notification is POSTed to the location's ``notificationUrl`` with
``Authorization: Bearer <notificationAuthToken>``. A 2xx ends it (``delivered``); anything else
(status, timeout, refused connection) is retried, the attempts spread evenly over
``retry_window_s``; after ``max_attempts`` failures it is ``dropped``, as Apple does. Workers never
sleep between attempts (retries are timers), so a broker outage does not stall other deliveries.

Fault knobs (:class:`Faults`): ``duplicate_rate`` (deliver a delivered notification once more,
same ``notificationId``, at a random moment within one retry gap),
``reorder`` (take pending notifications in random order),
``drop_rate`` (lose a notification before its first attempt, like a lost Apple-side message) and
``delay_s`` (hold each notification before its first attempt). Every attempt's outcome is kept
in :attr:`Deliverer.records` for the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Delivery behaviour; every field can be changed at run time through the control API."""

    max_attempts: int = 3
    retry_window_s: float = 180.0
    attempt_timeout_s: float = 10.0
    duplicate_rate: float = 0.0
    reorder: bool = False
    drop_rate: float = 0.0
    delay_s: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply known fields (type-checked); raises ValueError naming an unknown or bad one."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean")
            elif isinstance(current, int) and not isinstance(current, bool):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{name} must be a positive integer")
            elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeliveryRecord:
    notification_id: str
    notification_type: str
    event_id: str | None
    outcome: str = "pending"  # pending | delivered | dropped | dropped_fault
    attempts: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {
            "notificationId": self.notification_id,
            "notificationType": self.notification_type,
            "eventId": self.event_id,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "duplicates": self.duplicates,
        }


@dataclass
class _Item:
    url: str
    token: str
    payload: dict[str, Any]
    record: DeliveryRecord
    attempt: int = 0
    duplicate: bool = False


def _is_2xx(result: str) -> bool:
    return result.isdigit() and 200 <= int(result) < 300


class Deliverer:
    """Delivers notifications with ``concurrency`` workers; ``start()``/``stop()`` bound its tasks."""

    def __init__(
        self,
        faults: Faults,
        *,
        concurrency: int = 8,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.faults = faults
        self.records: dict[str, DeliveryRecord] = {}
        self.order: list[str] = []
        self._concurrency = concurrency
        self._rng = random.Random(seed)
        self._ssl = ssl_context
        self._ready: list[_Item] = []
        self._have_work = asyncio.Event()
        self._open = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession()
        self._workers = [
            asyncio.create_task(self._work(), name=f"apple-sim-delivery-{i}")
            for i in range(self._concurrency)
        ]

    async def stop(self) -> None:
        """Cancel workers and pending retries; undelivered notifications stay ``pending``."""
        tasks = [*self._workers, *self._timers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers, self._timers = [], set()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, token: str, payload: dict[str, Any]) -> str:
        """One POST; returns the HTTP status as text, or ``error:<ExceptionName>``."""
        if self._session is None:
            raise RuntimeError("deliverer not started")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._session.post(
                url,
                data=orjson.dumps(payload),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.faults.attempt_timeout_s),
                ssl=self._ssl if self._ssl is not None else True,
            ) as resp:
                await resp.read()
                return str(resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"error:{type(exc).__name__}"

    def enqueue(self, url: str, token: str, payload: dict[str, Any]) -> DeliveryRecord:
        """Schedule delivery of one notification (``payload`` is sent exactly as given)."""
        body = payload.get("notification")
        event_id = body.get("eventId") if isinstance(body, dict) else None
        record = DeliveryRecord(
            str(payload.get("notificationId", "")),
            str(payload.get("notificationType", "")),
            event_id if isinstance(event_id, str) else None,
        )
        self.records[record.notification_id] = record
        self.order.append(record.notification_id)
        if self._rng.random() < self.faults.drop_rate:
            record.outcome = "dropped_fault"
            return record
        self._open += 1
        self._idle.clear()
        item = _Item(url, token, payload, record)
        if self.faults.delay_s > 0:
            self._later(self.faults.delay_s, item)
        else:
            self._push(item)
        return record

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every enqueued notification is delivered or dropped."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.outcome] = counts.get(record.outcome, 0) + 1
        return counts

    def _push(self, item: _Item) -> None:
        self._ready.append(item)
        self._have_work.set()

    def _later(self, delay: float, item: _Item) -> None:
        async def fire() -> None:
            await asyncio.sleep(delay)
            self._push(item)

        task = asyncio.create_task(fire())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _finish(self, item: _Item, outcome: str) -> None:
        item.record.outcome = outcome
        self._release()

    async def _work(self) -> None:
        while True:
            await self._have_work.wait()
            if not self._ready:
                self._have_work.clear()
                continue
            index = self._rng.randrange(len(self._ready)) if self.faults.reorder else 0
            item = self._ready.pop(index)
            if not self._ready:
                self._have_work.clear()
            await self._attempt(item)

    def _release(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._idle.set()

    async def _attempt(self, item: _Item) -> None:
        result = await self.post(item.url, item.token, item.payload)
        attempts = self.faults.max_attempts
        gap = self.faults.retry_window_s / max(1, attempts - 1)
        if item.duplicate:  # a second, unrequested delivery of a delivered notification
            item.record.duplicates.append(result)
            self._release()
            return
        item.attempt += 1
        item.record.attempts.append(result)
        if _is_2xx(result):
            if self._rng.random() < self.faults.duplicate_rate:
                self._open += 1
                duplicate = _Item(item.url, item.token, item.payload, item.record, duplicate=True)
                self._later(self._rng.uniform(0.0, gap), duplicate)
            self._finish(item, "delivered")
            return
        if item.attempt >= attempts:
            log.info(
                "apple sim: notification %s dropped after %d attempts",
                item.record.notification_id,
                attempts,
            )
            self._finish(item, "dropped")
            return
        self._later(gap, item)
