"""Idempotent consumer of the broker's canonical events, for downstream services.

The handler's effect happens once per ``(source, id)``: duplicates are skipped, offsets are
committed only after success, failing events go to a dead-letter topic after ``max_attempts``.
See docs/consumer.md for the guarantees of each store and a complete example.

Public API (everything else in this package is private and may change). ``PostgresStore`` needs
the ``postgres`` extra (asyncpg) and is imported on first use, so the ``consumer`` extra alone
pulls no database driver.
"""

import typing as _typing

from broker.consumer.consumer import IdempotentConsumer
from broker.consumer.errors import ConsumerError, RejectEvent, StoreError
from broker.consumer.memory_store import InMemoryStore
from broker.consumer.metrics import DeadLetterReason
from broker.consumer.processor import Handler, ProcessingOutcome
from broker.consumer.records import ConsumedRecord
from broker.consumer.settings import ConsumerSettings
from broker.consumer.sqlite_store import SQLiteStore
from broker.consumer.store import DEFAULT_RETENTION_S, EventKey, IdempotencyStore

if _typing.TYPE_CHECKING:
    from broker.consumer.postgres_store import PostgresStore

__all__ = [
    "DEFAULT_RETENTION_S",
    "ConsumedRecord",
    "ConsumerError",
    "ConsumerSettings",
    "DeadLetterReason",
    "EventKey",
    "Handler",
    "IdempotencyStore",
    "IdempotentConsumer",
    "InMemoryStore",
    "PostgresStore",
    "ProcessingOutcome",
    "RejectEvent",
    "SQLiteStore",
    "StoreError",
]


def __getattr__(name: str) -> _typing.Any:
    """``PostgresStore`` on first use, so importing the package needs no asyncpg."""
    if name == "PostgresStore":
        from broker.consumer.postgres_store import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
