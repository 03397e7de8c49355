"""Fakes for the consumer's unit tests (they implement the Protocols structurally)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from broker.consumer import ConsumedRecord, DeadLetterReason, EventKey, InMemoryStore, StoreError
from broker.events import CanonicalEvent, encode_event


@dataclass
class DeadLetter:
    record: ConsumedRecord
    reason: DeadLetterReason
    detail: str
    attempts: int


@dataclass
class FakeDeadLetters:
    """Collects dead letters; fails the first ``fail_first`` sends."""

    fail_first: int = 0
    sent: list[DeadLetter] = field(default_factory=list)
    calls: int = 0

    async def send(
        self, record: ConsumedRecord, *, reason: DeadLetterReason, detail: str, attempts: int
    ) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("dlq down")
        self.sent.append(DeadLetter(record, reason, detail, attempts))


class FlakyStore(InMemoryStore):
    """An in-memory store whose first ``fail_first`` run_once calls fail like a lost database."""

    def __init__(self, fail_first: int) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.run_once_calls = 0

    async def run_once(self, key: EventKey, work: Callable[[None], Awaitable[None]]) -> bool:
        self.run_once_calls += 1
        if self.run_once_calls <= self.fail_first:
            raise StoreError("connection lost")
        return await super().run_once(key, work)


def record_of(event: CanonicalEvent, offset: int = 0, partition: int = 0) -> ConsumedRecord:
    return ConsumedRecord(
        topic="events",
        partition=partition,
        offset=offset,
        key=event.partitionkey.encode(),
        value=encode_event(event),
    )
