"""The dedupe-store interface every store implements, and the retention window.

A store remembers which events (key ``(source, id)``, the CloudEvents duplicate rule) were handled,
and how many times a handler failed on an event (so the attempt count survives a crash).

Retention: :data:`DEFAULT_RETENTION_S` is **8 days**. A duplicate can reach a consumer as long as
something upstream can still redeliver it:

* Google Play EMM notifications live in Cloud Pub/Sub, which keeps unacknowledged messages up to
  7 days (default retention) and redelivers them, possibly to another puller;
* Kafka's default topic retention is 7 days (``log.retention.hours=168``): a group reset to the
  earliest offset replays up to a week;
* Apple retries a webhook at most 3 times within about 5 minutes;
* Kapua never redelivers, but a restarted broker re-publishes records whose cursor it had not
  yet advanced (minutes).

The longest horizon is therefore 7 days; one day of margin covers clock skew, a consumer that was
down over a weekend boundary while Pub/Sub still held the message, and slow purges. Forgetting an id
earlier would let a late duplicate run the handler twice; keeping it longer only costs space.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

TxT_co = TypeVar("TxT_co", covariant=True)

#: ``(source, id)`` of a canonical event.
EventKey = tuple[str, str]

#: 8 days: the longest vendor redelivery horizon (7 days, Pub/Sub and Kafka retention) + 1 day.
DEFAULT_RETENTION_S: float = 8 * 24 * 3600.0


class IdempotencyStore(Protocol[TxT_co]):
    """Remembers handled events. ``TxT_co`` is what the handler receives as its transaction:
    an ``asyncpg`` connection inside an open transaction for :class:`PostgresStore`, ``None`` for
    the stores whose record of "done" cannot share a transaction with the handler.
    """

    async def open(self) -> None:
        """Connect and create the schema if missing. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def run_once(self, key: EventKey, work: Callable[[TxT_co], Awaitable[None]]) -> bool:
        """Run ``work`` unless ``key`` is already recorded; record ``key`` when ``work`` succeeds.

        Returns True when ``work`` ran and ``key`` is now recorded, False when ``key`` was already
        recorded (``work`` not called). An exception raised by ``work`` propagates unchanged and
        ``key`` stays unrecorded. Whether ``work``'s effect and the record are atomic depends on
        the store (see each store's docstring).
        """
        ...

    async def is_processed(self, key: EventKey) -> bool:
        """True when ``key`` is recorded (and not yet purged)."""
        ...

    async def record_failure(self, key: EventKey) -> int:
        """Durably count one more failed attempt for ``key``; return the total so far."""
        ...

    async def clear_failures(self, key: EventKey) -> None:
        """Forget the failed attempts of ``key`` (after success or dead-lettering)."""

    async def purge_expired(self) -> int:
        """Forget processed ids and failure counts older than the retention; return how many."""
        ...


class StopBatch(Exception):
    """Raised by a batch's ``work(i, tx)`` before running key ``i`` when the batch must end early
    (the partition is being revoked or the consumer stops): the store makes the keys before ``i``
    final (commits them) and returns a result covering only those."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What :meth:`BatchingStore.run_batch` did with a batch of keys.

    ``ran[i]`` for the first ``len(ran)`` keys, whose fate is final and durable: True when the work
    ran and the key is recorded, False when the key was already recorded (or repeated earlier in
    the batch) and the work was skipped. ``len(ran) < len(keys)`` without ``error``: the work
    raised :class:`StopBatch` at key ``len(ran)``. When ``error`` is set, the work of key ``failed_at``
    raised it; keys from ``len(ran)`` on are not recorded (with a transactional store the work of
    keys between ``len(ran)`` and ``failed_at`` was rolled back, with the others it ran but is
    not recorded, so it runs again: at-least-once), and keys after ``failed_at`` were not tried.
    """

    ran: list[bool]
    error: Exception | None = None
    failed_at: int | None = None


@runtime_checkable
class BatchingStore(Protocol[TxT_co]):
    """A store that decides a whole fetched batch in one transaction (optional for custom stores:
    the consumer falls back to :meth:`IdempotencyStore.run_once` per event without it)."""

    async def run_batch(
        self, keys: Sequence[EventKey], work: Callable[[int, TxT_co], Awaitable[None]]
    ) -> BatchResult:
        """Call ``work(i, tx)``, in order, for every key not yet recorded and not equal to an
        earlier key of the batch; record the keys whose work succeeded. Stops at the first
        exception raised by ``work`` and reports it in the result (see :class:`BatchResult`);
        :class:`StopBatch` ends the batch there and the keys before are committed.
        A failure of the store itself raises :class:`~broker.consumer.StoreError`: nothing of
        the batch is then final (works that ran run again)."""
        ...


class PendingRecord(Protocol):
    """The durable record of a batch's keys, being written (see :class:`PipeliningStore`)."""

    async def wait(self) -> None:
        """Return once the keys are durably recorded. A failed write raises
        :class:`~broker.consumer.StoreError`: the keys are then not recorded, and the store no
        longer treats them as recorded, until ``wait()`` is called again, which writes them again.
        Cancelling ``wait()`` does not cancel a write already under way."""


@runtime_checkable
class PipeliningStore(Protocol[TxT_co]):
    """A batching store that can record a batch in the background while the caller goes on
    (optional; the consumer uses it for the next batch's work while this one's write runs)."""

    async def run_batch_pipelined(
        self, keys: Sequence[EventKey], work: Callable[[int, TxT_co], Awaitable[None]]
    ) -> tuple[BatchResult, PendingRecord]:
        """Like :meth:`BatchingStore.run_batch`, but returns once the works ran and the write of
        the keys they recorded has started: those keys are final only once the
        :class:`PendingRecord`'s ``wait()`` returned. Until the write ends, this store's own
        lookups (every batch, partition and :meth:`IdempotencyStore.is_processed`) already treat
        the keys as recorded (their works did run); if it fails they are forgotten again."""
        ...
