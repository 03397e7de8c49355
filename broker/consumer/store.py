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

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

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
