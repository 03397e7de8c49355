"""`dlq replay` of Kapua dead letters (real Kafka, the simulator): a row the poller dead-lettered
under the old mapping is replayed after a mapping fix as the event it would have been."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import model_validator

import adapters.kapua.poller as kapua_poller
import adapters.kapua.replay as kapua_replay
from adapters.kapua.models import Notification
from broker.app.registry import renormalizers
from broker.dlq import DlqFilter, read_dead_letters, replay
from broker.events import CanonicalEvent, EventType
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from simulators.kapua.state import SimOperation
from tests.integration.kapua.helpers import (
    PercentProgress,
    all_closed,
    broker_settings,
    create_all_topics,
    eventually,
    kapua_section,
    owning_kapua_app,
    read_events,
    wait_operations_closed,
)

pytestmark = pytest.mark.kafka


Shape = tuple[EventType, str, Any]


@pytest.fixture
async def sim() -> AsyncIterator[KapuaSimulator]:
    async with KapuaSimulator(SimConfig(devices=1)) as simulator:
        yield simulator


async def test_a_row_dead_lettered_by_the_poller_is_replayed_after_the_fix_with_its_id(
    sim: KapuaSimulator,
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False)
    settings = broker_settings(kafka_settings, kapua)
    kapua_letters = DlqFilter(vendors=frozenset({"kapua"}))
    await create_all_topics(kafka_settings)
    async with owning_kapua_app(kafka_settings, kapua):
        device = next(iter(sim.state.devices["AQ"]))
        op = sim.state.start_operation("AQ", device, steps=400, step_interval_s=0.5, fail=False)
        bad = sim.state.inject_row(op.id, {"progress": "42%"})
        assert bad is not None

        async def dead_lettered() -> bool:
            return bool(await read_dead_letters(kafka_settings, kapua_letters))

        await eventually(dead_lettered, 60, "the row with progress '42%' dead-lettered")
    assert bad["id"] not in {r.event.id for r in await read_events(kafka_settings)}
    (letter,) = await read_dead_letters(kafka_settings, kapua_letters)
    assert letter.reason == "schema"
    assert letter.header("kapua-kind") == "row"
    assert letter.header("kapua-operation-id") == op.id
    assert letter.header("kapua-device-id") == device

    async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
        # An older broker's letter: no polling context, skipped with the reason.
        await publisher.dead_letter(letter.payload, vendor="kapua", reason="schema", tenant="AQ")
        letters = await read_dead_letters(kafka_settings, kapua_letters)
        assert len(letters) == 2
        before_fix = await replay(letters[:1], renormalizers(settings), publisher)
        assert [o.status for o in before_fix.outcomes] == ["still_failing"]

        monkeypatch.setattr(kapua_replay, "Notification", PercentProgress)
        first = await replay(letters, renormalizers(settings), publisher)
        second = await replay(letters, renormalizers(settings), publisher)
    for report in (first, second):
        assert [o.status for o in report.outcomes] == ["replayed", "not_replayable"]
        assert "no polling context" in report.outcomes[1].detail
        assert [e.id for e in report.outcomes[0].events] == [bad["id"]]

    replayed = [r for r in await read_events(kafka_settings) if r.event.id == bad["id"]]
    assert len(replayed) == 2  # replayed twice: the same id twice (the consumer dedupes)
    for record in replayed:
        event = record.event
        assert event.type is EventType.OPERATION_PROGRESSED
        assert event.tenant == "AQ"
        assert event.subject == f"devices/{device}/operations/{op.id}"
        assert event.data["progress"] == 42
        assert event.data["raw"] == bad  # the row exactly as Kapua returned it
    assert replayed[0].event == replayed[1].event
    assert replayed[0].key == replayed[1].key


class RejectedRows(Notification):
    """The "old mapping" of the live-vs-replay test: rows of the operations named in ``REJECT``
    with the status named there fail validation (the poller dead-letters them)."""

    REJECT: ClassVar[dict[str, str]] = {}

    @model_validator(mode="after")
    def _reject(self) -> RejectedRows:
        if self.REJECT.get(self.operation_id) == self.status:
            raise ValueError(f"a {self.status} row the old mapping could not read")
        return self


def _shapes(events: list[CanonicalEvent], op_id: str, rows: list[dict[str, Any]]) -> set[Shape]:
    """(type, id) of one operation's events, with ids made comparable across two operations
    that ran the same plan: a row id as its position in the operation, ``{op}:X`` as ``op:X``."""
    position = {row["id"]: index for index, row in enumerate(rows)}
    shapes: set[Shape] = set()
    for event in events:
        if event.id in position:
            shapes.add((event.type, f"row {position[event.id]}", event.data.get("status")))
        else:
            assert event.id.startswith(f"{op_id}:")
            shapes.add((event.type, event.id.replace(op_id, "op"), event.data.get("status")))
    return shapes


# (rejected row status, plan): RUNNING rows; the closing COMPLETED or FAILED row; a DEPLOY-V2
# download whose COMPLETED row ends a phase while the install phase runs on (Kapua 3.7).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("RUNNING", {"fail": False}),
    ("COMPLETED", {"fail": False}),
    ("FAILED", {"fail": True}),
    ("COMPLETED", {"fail": False, "install": True}),
]


async def test_live_and_replay_give_the_same_event_for_each_status(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For each case two operations run the same plan: one read live, one whose rows of that
    status the poller dead-lettered (then replayed with the fixed mapping). The live operation's
    events and the other's events plus replays are the same types and ids: a closing row replays
    as the operation's terminal event (its id, deduped downstream), never as progress."""
    monkeypatch.setattr(kapua_poller, "Notification", RejectedRows)
    monkeypatch.setattr(RejectedRows, "REJECT", {})
    # The closing row stays listed a while before Kapua closes the operation, so it is seen.
    config = SimConfig(devices=1, terminal_row_linger_s=1.5)
    async with KapuaSimulator(config) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False)
        settings = broker_settings(kafka_settings, kapua)
        await create_all_topics(kafka_settings)
        device = next(iter(sim.state.devices["AQ"]))
        pairs = []
        async with owning_kapua_app(kafka_settings, kapua) as app:
            for status, plan in CASES:
                live, bad = (
                    sim.state.start_operation("AQ", device, steps=2, step_interval_s=0.4, **plan)
                    for _ in range(2)
                )
                RejectedRows.REJECT[bad.id] = status
                pairs.append((live.id, bad.id))
            await wait_operations_closed(sim, app, 2 * len(CASES), "every operation closed")
        letters = await read_dead_letters(kafka_settings, DlqFilter(vendors=frozenset({"kapua"})))
        published = [r.event for r in await read_events(kafka_settings)]
        async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
            report = await replay(letters, renormalizers(settings), publisher)
        rows = {
            op_id: sorted(
                (r for r in sim.state.emitted.values() if r["operationId"] == op_id),
                key=lambda r: (r["sentOn"], r["createdOn"]),
            )
            for pair in pairs
            for op_id in pair
        }
    assert [o.status for o in report.outcomes] == ["replayed"] * len(letters)
    replayed = [event for outcome in report.outcomes for event in outcome.events]
    assert len(letters) == 2 + 1 + 1 + 2  # 2 RUNNING rows; a closing row twice; 2 COMPLETED rows
    for (status, _), (live_id, bad_id) in zip(CASES, pairs, strict=True):
        live_events = [e for e in published if e.subject and e.subject.endswith(live_id)]
        bad_events = [e for e in published + replayed if e.subject and e.subject.endswith(bad_id)]
        live_shapes = _shapes(live_events, live_id, rows[live_id])
        assert _shapes(bad_events, bad_id, rows[bad_id]) == live_shapes, status
        terminal = [e for e in replayed if e.id.startswith(f"{bad_id}:")]
        for event in terminal:  # the replayed closing row is folded in, as the poller does
            assert event.data["terminal_row"]["status"] == status
            assert event.data["observed_via"] == "notification"


async def _download_rows_listed(
    sim: KapuaSimulator, device: str
) -> tuple[SimOperation, SimOperation]:
    """Two DEPLOY-V2 operations (download then install, no RUNNING rows, phases an hour apart
    unless advanced by hand) whose download COMPLETED rows exist and were listed by the poller;
    the second one's COMPLETED rows fail validation (:class:`RejectedRows`)."""
    live, bad = (
        sim.state.start_operation(
            "AQ", device, steps=0, step_interval_s=3600, fail=False, install=True
        )
        for _ in range(2)
    )
    RejectedRows.REJECT[bad.id] = "COMPLETED"
    sim.state.advance(max(live.steps[0].at, bad.steps[0].at))  # the download rows
    downloads = [op.rows[0] for op in (live, bad)]
    assert [r["resource"] for r in downloads] == ["download", "download"]

    async def both_listed() -> bool:
        return all(r["id"] in sim.state.returned for r in downloads)

    await eventually(both_listed, 60, "both download rows listed by the poller")
    return live, bad


async def test_a_download_phase_row_seen_last_before_the_close_is_progress_live_and_replayed(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race: a DEPLOY-V2 download's COMPLETED row is the newest row the poller saw (held: the
    operation is still RUNNING), then the install phase ends and Kapua closes the operation (and
    deletes its rows) before the poller lists the install row. The download row did not close
    the operation (``endedOn`` is the install row's ``sentOn``): live, it is published as
    progress, then the terminal event from the record; its dead letter replays as the same."""
    monkeypatch.setattr(kapua_poller, "Notification", RejectedRows)
    monkeypatch.setattr(RejectedRows, "REJECT", {})
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False, terminal_grace_s=300.0)
        settings = broker_settings(kafka_settings, kapua)
        await create_all_topics(kafka_settings)
        device = next(iter(sim.state.devices["AQ"]))
        async with owning_kapua_app(kafka_settings, kapua) as app:
            live, bad = await _download_rows_listed(sim, device)
            sim.state.advance(max(live.steps[1].at, bad.steps[1].at))  # install ends: closed
            assert all_closed(sim)
            await wait_operations_closed(sim, app, 2, "both operations closed")
        letters = await read_dead_letters(kafka_settings, DlqFilter(vendors=frozenset({"kapua"})))
        published = [r.event for r in await read_events(kafka_settings)]
        async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
            report = await replay(letters, renormalizers(settings), publisher)
        rows = {
            op.id: sorted(
                (r for r in sim.state.emitted.values() if r["operationId"] == op.id),
                key=lambda r: (r["sentOn"], r["createdOn"]),
            )
            for op in (live, bad)
        }
    assert [letter.header("kapua-operation-id") for letter in letters] == [bad.id]
    assert [o.status for o in report.outcomes] == ["replayed"]
    replayed = report.outcomes[0].events
    live_events = [e for e in published if e.subject and e.subject.endswith(live.id)]
    bad_events = [e for e in published + replayed if e.subject and e.subject.endswith(bad.id)]
    expected = {
        (EventType.OPERATION_PROGRESSED, "row 0", "COMPLETED"),
        (EventType.OPERATION_COMPLETED, "op:COMPLETED", "COMPLETED"),
    }
    assert _shapes(live_events, live.id, rows[live.id]) == expected
    assert _shapes(bad_events, bad.id, rows[bad.id]) == expected
    (terminal,) = [e for e in live_events if e.id == f"{live.id}:COMPLETED"]
    assert terminal.data["observed_via"] == "operation"  # the download row is not folded in
    assert terminal.data["terminal_row"] is None


async def test_a_held_row_of_an_operation_deleted_before_its_record_is_read_is_not_labelled(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DEPLOY-V2 download's COMPLETED row waits for the operation record (held, or invalid and
    kept as a suspect), a RUNNING row follows it, and Kapua deletes the operation before the
    poller reads the record after listing that row. The RUNNING row is published as progress;
    the held row goes to the DLQ (``closing_unknown`` when valid, ``schema`` when invalid) with
    Kapua's 404 in the letter, and replay refuses both with the same reason (whether the row
    closed the operation was on the deleted record); the operation ends ``{op}:VANISHED``."""
    monkeypatch.setattr(kapua_poller, "Notification", RejectedRows)
    monkeypatch.setattr(RejectedRows, "REJECT", {})
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False, terminal_grace_s=300.0)
        settings = broker_settings(kafka_settings, kapua)
        await create_all_topics(kafka_settings)
        device = next(iter(sim.state.devices["AQ"]))
        async with owning_kapua_app(kafka_settings, kapua) as app:
            held, bad = await _download_rows_listed(sim, device)
            downloads = {op.id: op.rows[0] for op in (held, bad)}
            after: dict[str, dict[str, Any]] = {}
            for op in (held, bad):
                row = sim.state.inject_row(op.id, {})
                assert row is not None
                after[op.id] = row
                sim.state.delete_once_listed(op.id, row["id"])
            await wait_operations_closed(sim, app, 2, "both operations vanished")
        letters = await read_dead_letters(kafka_settings, DlqFilter(vendors=frozenset({"kapua"})))
        published = [r.event for r in await read_events(kafka_settings)]
        async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
            report = await replay(letters, renormalizers(settings), publisher)
    for op in (held, bad):
        events = [e for e in published if e.subject and e.subject.endswith(op.id)]
        assert [(e.type, e.id) for e in events] == [
            (EventType.OPERATION_PROGRESSED, after[op.id]["id"]),
            (EventType.OPERATION_VANISHED, f"{op.id}:VANISHED"),
        ]
    by_op = {letter.header("kapua-operation-id"): letter for letter in letters}
    assert len(letters) == 2
    assert by_op[held.id].reason == "closing_unknown"
    assert by_op[bad.id].reason == "schema"
    for op in (held, bad):
        letter = by_op[op.id]
        assert orjson.loads(letter.payload) == downloads[op.id]
        assert letter.header("kapua-operation-vanished")
        assert not letter.header("kapua-operation")
    assert [o.status for o in report.outcomes] == ["not_replayable", "not_replayable"]
    for outcome in report.outcomes:
        op_id = outcome.letter.header("kapua-operation-id")
        assert outcome.detail == kapua_replay.closing_unknown(op_id)


async def test_held_rows_of_an_operation_that_ends_in_an_unknown_status_are_progress(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A download's COMPLETED row waits for the record (held, or invalid and a suspect); the
    record turns to a status the broker does not know and stays there past
    ``unknown_status_grace_s``, which ends the watch. The record did not end in COMPLETED, so the
    row did not close the operation: live, it is published as progress before the watch ends
    (it was dropped); its dead letter replays as the same."""
    monkeypatch.setattr(kapua_poller, "Notification", RejectedRows)
    monkeypatch.setattr(RejectedRows, "REJECT", {})
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        kapua = kapua_section(
            sim,
            topic_prefix,
            watch_topic_enabled=False,
            terminal_grace_s=300.0,
            unknown_status_grace_s=1.0,
        )
        settings = broker_settings(kafka_settings, kapua)
        await create_all_topics(kafka_settings)
        device = next(iter(sim.state.devices["AQ"]))
        async with owning_kapua_app(kafka_settings, kapua) as app:
            held, bad = await _download_rows_listed(sim, device)
            for op in (held, bad):
                assert sim.state.set_status(op.id, "CANCELLED")
            await wait_operations_closed(sim, app, 2, "both watches ended")
        letters = await read_dead_letters(kafka_settings, DlqFilter(vendors=frozenset({"kapua"})))
        published = [r.event for r in await read_events(kafka_settings)]
        async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
            report = await replay(letters, renormalizers(settings), publisher)
    assert [letter.header("kapua-operation-id") for letter in letters] == [bad.id]
    assert [o.status for o in report.outcomes] == ["replayed"]
    for op, events in ((held, published), (bad, published + report.outcomes[0].events)):
        mine = [e for e in events if e.subject and e.subject.endswith(op.id)]
        assert {(e.type, e.id) for e in mine} == {
            (EventType.OPERATION_PROGRESSED, op.rows[0]["id"]),
            (EventType.UNKNOWN, f"{op.id}:CANCELLED"),
        }
