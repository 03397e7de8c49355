"""`mdm-broker run` SIGKILLed while a COMPLETED row waits for the operation record (whether it
closed the operation or ended a phase), then Kapua closes the operation with that row and deletes
it before the broker is back. The restarted broker still has the row from the operation's cursor
in the state topic: a valid row (``held``) is folded into the terminal event as it would have been
without the kill; an invalid one (``suspects``) ends in the DLQ with the record and replays as the
terminal event the poller would publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import adapters.kapua.replay as kapua_replay
from adapters.kapua.cursors import OpRecord
from broker.app.registry import renormalizers
from broker.dlq import DlqFilter, read_dead_letters, replay
from broker.events import EventType
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from simulators.kapua.state import SimOperation
from tests.integration.kapua.helpers import (
    PercentProgress,
    broker_settings,
    create_all_topics,
    eventually,
    kapua_section,
    read_events,
    read_kapua_state,
    start_broker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def _kill_while_the_row_waits(
    sim: KapuaSimulator,
    kapua: dict[str, Any],
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    row_fields: dict[str, Any],
) -> tuple[SimOperation, dict[str, Any], list[OpRecord]]:
    """The scenario: a RUNNING operation with no rows of its own for an hour gets a COMPLETED row
    (``row_fields``); the broker is SIGKILLed once the poll that listed it is over; Kapua closes
    the operation with that row (and deletes it); a second broker runs until the terminal event is
    published. Returns the operation, the row and the cursor records at the kill."""
    await create_all_topics(kafka_settings)
    first = await start_broker(tmp_path, kafka_settings, kapua, "first")
    try:
        device = next(iter(sim.state.devices["AQ"]))
        op = sim.state.start_operation("AQ", device, steps=0, step_interval_s=3600, fail=False)

        def requests() -> int:
            return sum(count for _, count in sim.state.polls.get(op.id, []))

        async def polled(at_least: int) -> bool:
            return requests() >= at_least

        await eventually(lambda: polled(1), 60, "the operation is polled")
        row = sim.state.inject_row(op.id, {"status": "COMPLETED"} | row_fields)
        assert row is not None

        async def listed() -> bool:
            return row["id"] in sim.state.returned

        await eventually(listed, 60, "the row listed by the broker", 0.05)
        after = requests()
        # Polls of one operation are sequential: 3 more requests (its record read, then a list
        # and a record read) mean the poll that saw the row is over.
        await eventually(lambda: polled(after + 3), 60, "three more requests")
        published = {r.event.id for r in await read_events(kafka_settings)}
        assert row["id"] not in published  # still waiting for the record (the design)
        assert f"{op.id}:COMPLETED" not in published
        assert await read_dead_letters(kafka_settings, DlqFilter()) == []
    finally:
        await first.kill()
    state = await read_kapua_state(kafka_settings)
    cursors = [r for r in state.values() if r.kind == "cursor"]

    # Kapua closes the operation with that row and deletes every row while the broker is down.
    assert sim.state.close_operation(op.id, row["id"])
    assert op.doc["status"] == "COMPLETED"
    assert op.doc["endedOn"] == row["sentOn"]

    second = await start_broker(
        tmp_path, kafka_settings, kapua | {"instance_id": "a2"}, "second", owning=False
    )
    try:

        async def terminal_published() -> bool:
            return any(
                r.event.id == f"{op.id}:COMPLETED" for r in await read_events(kafka_settings)
            )

        await eventually(terminal_published, 120, "the terminal event published", 0.5)
    finally:
        assert await second.stop() == 0
    return op, row, cursors


def _kapua(sim: KapuaSimulator, topic_prefix: str) -> dict[str, Any]:
    # The row waits for the record far longer than the test runs: only the close decides.
    return kapua_section(
        sim, topic_prefix, watch_topic_enabled=False, instance_id="a", terminal_grace_s=600.0
    )


async def test_a_held_closing_row_seen_before_a_sigkill_is_in_the_terminal_event_after_restart(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        op, row, cursors = await _kill_while_the_row_waits(
            sim, _kapua(sim, topic_prefix), kafka_settings, tmp_path, {"progress": 100}
        )
    (terminal,) = [
        r.event for r in await read_events(kafka_settings) if r.event.id == f"{op.id}:COMPLETED"
    ]
    assert terminal.data["terminal_row"] == row  # the row as Kapua returned it, after a kill
    assert terminal.data["observed_via"] == "notification"
    assert terminal.data["notification_id"] == row["id"]
    assert [c.held for c in cursors] == [row]  # it was kept in the state topic
    assert await read_dead_letters(kafka_settings, DlqFilter(vendors=frozenset({"kapua"}))) == []


async def test_an_invalid_closing_row_seen_before_a_sigkill_is_dead_lettered_after_restart(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        kapua = _kapua(sim, topic_prefix)
        # The broker's mapping rejects progress "100%".
        op, bad, cursors = await _kill_while_the_row_waits(
            sim, kapua, kafka_settings, tmp_path, {"progress": "100%"}
        )
        assert [list(c.suspects) for c in cursors] == [[bad["id"]]]
        letters = await read_dead_letters(kafka_settings, DlqFilter(vendors=frozenset({"kapua"})))
        assert [letter.reason for letter in letters] == ["schema"], letters
        (letter,) = letters
        assert orjson.loads(letter.payload) == bad  # the row as Kapua returned it
        assert letter.header("kapua-kind") == "row"
        assert orjson.loads(letter.header("kapua-operation"))["status"] == "COMPLETED"

        # Once the mapping reads "100%", replay gives the event the poller would have published.
        monkeypatch.setattr(kapua_replay, "Notification", PercentProgress)
        settings = broker_settings(kafka_settings, kapua)
        async with KafkaPublisher(kafka_settings, KafkaHealth(), BrokerMetrics()) as publisher:
            report = await replay(letters, renormalizers(settings), publisher)
    assert [o.status for o in report.outcomes] == ["replayed"]
    (event,) = report.outcomes[0].events
    assert (event.type, event.id) == (EventType.OPERATION_COMPLETED, f"{op.id}:COMPLETED")
    assert event.data["terminal_row"] == bad
    assert event.data["progress"] == 100
