"""The consumer's public surface is exactly ``__all__``; changing it must be deliberate."""

from __future__ import annotations

import inspect

import broker.consumer as api

EXPECTED = [
    "ConsumedRecord",
    "ConsumerError",
    "ConsumerSettings",
    "DEFAULT_RETENTION_S",
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


def test_all_is_the_documented_surface() -> None:
    assert sorted(api.__all__) == EXPECTED


def test_every_exported_name_exists_and_classes_are_documented() -> None:
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value):
            assert value.__doc__, f"{name} has no docstring"


def test_no_other_public_names_leak_from_the_package() -> None:
    submodules = {
        "consumer", "dlq", "errors", "memory_store", "metrics", "partitions", "postgres_store",
        "processor", "records", "settings", "sqlite_store", "store",
    }  # fmt: skip
    public = {n for n in vars(api) if not n.startswith("_")} - submodules
    assert public | {"PostgresStore"} == set(EXPECTED)  # PostgresStore is imported on first use


def test_docs_mention_every_exported_name() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "consumer.md").read_text()
    missing = [name for name in api.__all__ if name not in doc]
    assert missing == []
