"""A consumed Kafka record as a plain typed value (aiokafka's types stop at the consumer)."""

from __future__ import annotations

from typing import NamedTuple


class ConsumedRecord(NamedTuple):
    """One record read from the events topic (immutable).

    A named tuple rather than a frozen dataclass: one is built per consumed record, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost ~2x as much."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0
