"""RecordProcessor with fakes: outcomes, retries, durable attempt counts, dead letters, metrics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from broker.consumer import (
    ConsumedRecord,
    ConsumerSettings,
    DeadLetterReason,
    InMemoryStore,
    ProcessingOutcome,
    RejectEvent,
    StoreError,
)
from broker.consumer.metrics import ConsumerMetrics
from broker.consumer.processor import Handler, RecordProcessor
from broker.events import CanonicalEvent, encode_event
from tests.integration.consumer.helpers import sample_event
from tests.unit.consumer.fakes import FakeDeadLetters, FlakyStore, record_of

GROUP = "g"


def _settings(max_attempts: int = 3) -> ConsumerSettings:
    return ConsumerSettings(
        group_id=GROUP,
        max_attempts=max_attempts,
        retry_backoff_initial_s=0.001,
        retry_backoff_max_s=0.002,
    )


def _processor(
    handler: Handler[None],
    store: InMemoryStore | None = None,
    dlq: FakeDeadLetters | None = None,
    max_attempts: int = 3,
) -> tuple[RecordProcessor[None], CollectorRegistry, FakeDeadLetters, InMemoryStore]:
    registry = CollectorRegistry()
    store = InMemoryStore() if store is None else store
    dlq = FakeDeadLetters() if dlq is None else dlq
    processor = RecordProcessor(
        _settings(max_attempts), store, handler, dlq, ConsumerMetrics.for_registry(registry)
    )
    return processor, registry, dlq, store


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"group": GROUP, **labels}) or 0.0


async def test_first_delivery_is_processed_and_duplicates_are_skipped() -> None:
    seen: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        seen.append(event.id)

    processor, registry, _, _ = _processor(handler)
    event = sample_event(1)
    outcomes = [await processor.process(record_of(event, offset=n)) for n in range(3)]
    assert outcomes == [
        ProcessingOutcome.PROCESSED,
        ProcessingOutcome.DUPLICATE,
        ProcessingOutcome.DUPLICATE,
    ]
    assert seen == ["e1"]
    assert _count(registry, "mdm_broker_consumer_processed_total") == 1
    assert _count(registry, "mdm_broker_consumer_duplicates_skipped_total") == 2


async def test_same_id_from_another_source_is_not_a_duplicate() -> None:
    seen: list[tuple[str, str]] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        seen.append(event.idempotency_key)

    processor, _, _, _ = _processor(handler)
    await processor.process(record_of(sample_event(1, tenant="a")))
    await processor.process(record_of(sample_event(1, tenant="b")))
    assert len(seen) == 2


async def test_handler_failing_n_times_goes_to_the_dlq_with_attempts() -> None:
    calls = 0

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("boom")

    processor, registry, dlq, store = _processor(handler, max_attempts=4)
    record = record_of(sample_event(1), offset=5)
    assert await processor.process(record) is ProcessingOutcome.DEAD_LETTERED
    assert calls == 4
    (dead,) = dlq.sent
    assert dead.record is record
    assert dead.reason is DeadLetterReason.HANDLER_FAILED
    assert dead.attempts == 4
    assert dead.detail == "ValueError: boom"
    assert _count(registry, "mdm_broker_consumer_handler_errors_total") == 4
    assert _count(registry, "mdm_broker_consumer_dead_lettered_total", reason="handler_failed") == 1
    assert not await store.is_processed(("/kapua/scopes/scope-1", "e1"))
    assert await store.record_failure(("/kapua/scopes/scope-1", "e1")) == 1  # count was cleared


async def test_attempts_already_counted_in_the_store_are_honoured() -> None:
    """The count lives in the store: a restart after 2 failures allows only 1 more attempt."""
    calls = 0

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("boom")

    store = InMemoryStore()
    key = sample_event(1).idempotency_key
    await store.record_failure(key)
    await store.record_failure(key)
    processor, _, dlq, _ = _processor(handler, store=store, max_attempts=3)
    assert await processor.process(record_of(sample_event(1))) is ProcessingOutcome.DEAD_LETTERED
    assert calls == 1
    assert dlq.sent[0].attempts == 3


async def test_handler_recovering_before_the_limit_is_processed_and_count_cleared() -> None:
    calls = 0

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ValueError("transient")

    processor, _, dlq, store = _processor(handler, max_attempts=3)
    assert await processor.process(record_of(sample_event(1))) is ProcessingOutcome.PROCESSED
    assert dlq.sent == []
    assert await store.record_failure(sample_event(1).idempotency_key) == 1


async def test_reject_event_dead_letters_at_once() -> None:
    calls = 0

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal calls
        calls += 1
        raise RejectEvent("not ours")

    processor, registry, dlq, _ = _processor(handler, max_attempts=5)
    assert await processor.process(record_of(sample_event(1))) is ProcessingOutcome.DEAD_LETTERED
    assert calls == 1
    assert (dlq.sent[0].reason, dlq.sent[0].detail) == (DeadLetterReason.REJECTED, "not ours")
    assert _count(registry, "mdm_broker_consumer_dead_lettered_total", reason="rejected") == 1


@pytest.mark.parametrize("value", [b"{not json", b"[]", b'{"id": "x"}', None])
async def test_undecodable_records_are_dead_lettered_without_calling_the_handler(
    value: bytes | None,
) -> None:
    async def handler(event: CanonicalEvent, tx: None) -> None:
        raise AssertionError("must not be called")

    processor, registry, dlq, _ = _processor(handler)
    record = ConsumedRecord(topic="events", partition=0, offset=1, key=None, value=value)
    assert await processor.process(record) is ProcessingOutcome.DEAD_LETTERED
    assert dlq.sent[0].reason is DeadLetterReason.UNDECODABLE
    assert dlq.sent[0].detail
    assert _count(registry, "mdm_broker_consumer_dead_lettered_total", reason="undecodable") == 1


async def test_store_outage_is_retried_without_counting_handler_attempts() -> None:
    seen: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        seen.append(event.id)

    store = FlakyStore(fail_first=3)
    processor, registry, dlq, _ = _processor(handler, store=store, max_attempts=1)
    assert await processor.process(record_of(sample_event(1))) is ProcessingOutcome.PROCESSED
    assert seen == ["e1"]
    assert dlq.sent == []
    assert _count(registry, "mdm_broker_consumer_store_errors_total") == 3
    assert _count(registry, "mdm_broker_consumer_handler_errors_total") == 0


async def test_dead_letter_outage_is_retried_until_the_write_succeeds() -> None:
    async def handler(event: CanonicalEvent, tx: None) -> None:
        raise ValueError("boom")

    dlq = FakeDeadLetters(fail_first=2)
    processor, registry, _, _ = _processor(handler, dlq=dlq, max_attempts=1)
    assert await processor.process(record_of(sample_event(1))) is ProcessingOutcome.DEAD_LETTERED
    assert dlq.calls == 3
    assert len(dlq.sent) == 1
    assert _count(registry, "mdm_broker_consumer_dead_lettered_total", reason="handler_failed") == 1


async def test_observer_sees_every_final_outcome() -> None:
    async def handler(event: CanonicalEvent, tx: None) -> None:
        return None

    seen: list[tuple[ProcessingOutcome, int]] = []
    processor = RecordProcessor(
        _settings(),
        InMemoryStore(),
        handler,
        FakeDeadLetters(),
        ConsumerMetrics.for_registry(CollectorRegistry()),
        observer=lambda outcome, record: seen.append((outcome, record.offset)),
    )
    await processor.process(record_of(sample_event(1), offset=0))
    await processor.process(record_of(sample_event(1), offset=1))
    assert seen == [(ProcessingOutcome.PROCESSED, 0), (ProcessingOutcome.DUPLICATE, 1)]


async def test_a_batch_keeps_order_skips_duplicates_and_dead_letters_in_place() -> None:
    """Duplicates, an undecodable record and a handler failing once in one batch: outcomes,
    handler calls and observer calls all in offset order; the failure is counted and retried."""
    calls: list[str] = []
    failed_once: set[str] = set()

    async def handler(event: CanonicalEvent, tx: None) -> None:
        calls.append(event.id)
        if event.id == "e3" and "e3" not in failed_once:
            failed_once.add("e3")
            raise ValueError("transient")

    seen: list[tuple[ProcessingOutcome, int]] = []
    registry = CollectorRegistry()
    dlq = FakeDeadLetters()
    store = InMemoryStore()
    await store.run_once(sample_event(0).idempotency_key, _noop)
    processor = RecordProcessor(
        _settings(),
        store,
        handler,
        dlq,
        ConsumerMetrics.for_registry(registry),
        observer=lambda outcome, record: seen.append((outcome, record.offset)),
    )
    bad = ConsumedRecord(topic="events", partition=0, offset=3, key=None, value=b"{oops")
    records = [
        record_of(sample_event(0), offset=0),  # recorded before: duplicate
        record_of(sample_event(1), offset=1),
        record_of(sample_event(1), offset=2),  # repeated within the batch
        bad,
        record_of(sample_event(3), offset=4),  # fails once, then succeeds
        record_of(sample_event(4), offset=5),
    ]
    P, D, X = (
        ProcessingOutcome.PROCESSED,
        ProcessingOutcome.DUPLICATE,
        ProcessingOutcome.DEAD_LETTERED,
    )
    assert await processor.process_batch(records) == [D, P, D, X, P, P]
    assert seen == list(zip([D, P, D, X, P, P], range(6), strict=True))
    assert calls == ["e1", "e3", "e3", "e4"]
    assert [d.record for d in dlq.sent] == [bad]
    assert _count(registry, "mdm_broker_consumer_processed_total") == 3
    assert _count(registry, "mdm_broker_consumer_duplicates_skipped_total") == 2
    assert _count(registry, "mdm_broker_consumer_handler_errors_total") == 1
    assert await store.record_failure(sample_event(3).idempotency_key) == 1  # count cleared


async def test_a_record_with_an_event_key_but_no_valid_event_is_dead_lettered_in_a_batch() -> None:
    """The batch reads only ``(source, id)`` up front; a record that has them but fails the
    event's validation when it is handled is dead-lettered in place, the others are handled."""
    calls: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        calls.append(event.id)

    processor, registry, dlq, store = _processor(handler)
    bad = ConsumedRecord(
        topic="events", partition=0, offset=1, key=None, value=b'{"source": "/s", "id": "x"}'
    )
    records = [record_of(sample_event(0), offset=0), bad, record_of(sample_event(2), offset=2)]
    P, X = ProcessingOutcome.PROCESSED, ProcessingOutcome.DEAD_LETTERED
    assert await processor.process_batch(records) == [P, X, P]
    assert calls == ["e0", "e2"]
    assert [(d.record, d.reason) for d in dlq.sent] == [(bad, DeadLetterReason.UNDECODABLE)]
    assert _count(registry, "mdm_broker_consumer_handler_errors_total") == 0
    assert not await store.is_processed(("/s", "x"))


async def test_a_repeated_id_member_gives_the_same_key_to_the_batch_and_the_event() -> None:
    """The batch's key reader and the event's decoder both take the last of repeated members:
    the record is deduplicated under the id its handler sees, and recorded under it."""
    seen: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        seen.append(event.id)

    processor, _, dlq, store = _processor(handler)
    value = encode_event(sample_event(0))
    repeated = value[:-1] + b',"id":"last"}'  # "id" again, after "data"
    record = ConsumedRecord(topic="events", partition=0, offset=0, key=None, value=repeated)
    assert await processor.process_batch([record]) == [ProcessingOutcome.PROCESSED]
    assert seen == ["last"]
    assert await store.is_processed((sample_event(0).source, "last"))
    assert not await store.is_processed(sample_event(0).idempotency_key)
    assert dlq.sent == []


async def test_a_handler_failing_in_a_batch_counts_toward_max_attempts() -> None:
    calls = 0

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("boom")

    processor, _, dlq, _ = _processor(handler, max_attempts=2)
    outcomes = await processor.process_batch([record_of(sample_event(1))])
    assert outcomes == [ProcessingOutcome.DEAD_LETTERED]
    assert calls == 2
    assert dlq.sent[0].attempts == 2


async def test_a_store_failing_in_a_batch_falls_back_to_one_at_a_time() -> None:
    class BrokenBatches(InMemoryStore):
        async def run_batch(self, keys: Any, work: Any) -> Any:
            raise StoreError("connection lost")

    seen: list[str] = []

    async def handler(event: CanonicalEvent, tx: None) -> None:
        seen.append(event.id)

    processor, registry, _, _ = _processor(handler, store=BrokenBatches())
    records = [record_of(sample_event(n), offset=n) for n in range(3)]
    assert await processor.process_batch(records) == [ProcessingOutcome.PROCESSED] * 3
    assert seen == ["e0", "e1", "e2"]
    assert _count(registry, "mdm_broker_consumer_store_errors_total") == 1


async def _noop(tx: None) -> None:
    return None


def test_metrics_are_declared_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert ConsumerMetrics.for_registry(registry) is ConsumerMetrics.for_registry(registry)
    assert ConsumerMetrics.for_registry(CollectorRegistry()) is not ConsumerMetrics.for_registry(
        registry
    )
