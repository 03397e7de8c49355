"""`mdm-broker run` SIGKILLed while an invalid COMPLETED row waits for the operation record, then
Kapua closes the operation with that row and deletes it before the broker is back: the row still
ends in the DLQ, with the record, and replays as the terminal event the poller would publish."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import adapters.kapua.replay as kapua_replay
from broker.app.registry import renormalizers
from broker.devtools.devkafka import free_port
from broker.dlq import DlqFilter, read_dead_letters, replay
from broker.events import EventType
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    BrokerProcess,
    PercentProgress,
    broker_settings,
    create_all_topics,
    eventually,
    kapua_section,
    read_events,
    write_toml,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_an_invalid_closing_row_seen_before_a_sigkill_is_dead_lettered_after_restart(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        # The row waits for the record far longer than the test runs: only the close decides.
        kapua = kapua_section(
            sim, topic_prefix, watch_topic_enabled=False, instance_id="a", terminal_grace_s=600.0
        )
        await create_all_topics(kafka_settings)
        port = free_port()
        config = write_toml(tmp_path / "broker.toml", kafka_settings, kapua, port)
        first = BrokerProcess(config, tmp_path / "first.log", port)
        await first.start()
        try:

            async def owning() -> bool:
                return await first.owned_partitions() == kafka_settings.partitions

            await eventually(owning, 60, "first broker owns the state partitions")
            device = next(iter(sim.state.devices["AQ"]))
            # RUNNING, no rows of its own for an hour; then a COMPLETED row the broker's
            # mapping rejects (progress "100%").
            op = sim.state.start_operation("AQ", device, steps=0, step_interval_s=3600, fail=False)

            def requests() -> int:
                return sum(count for _, count in sim.state.polls.get(op.id, []))

            async def polled(at_least: int) -> bool:
                return requests() >= at_least

            await eventually(lambda: polled(1), 60, "the operation is polled")
            bad = sim.state.inject_row(op.id, {"status": "COMPLETED", "progress": "100%"})
            assert bad is not None

            async def listed() -> bool:
                return bad["id"] in sim.state.returned

            await eventually(listed, 60, "the invalid row listed by the broker", 0.05)
            after = requests()
            # Polls of one operation are sequential: 3 more requests (its record read, then a
            # list and a record read) mean the poll that saw the row is over.
            await eventually(lambda: polled(after + 3), 60, "three more requests")
            letters = await read_dead_letters(kafka_settings, DlqFilter())
            assert letters == []  # still waiting for the record (the design, not the bug)
        finally:
            await first.kill()

        # Kapua closes the operation with that row and deletes every row while the broker is down.
        assert sim.state.close_operation(op.id, bad["id"])
        assert op.doc["status"] == "COMPLETED"
        assert op.doc["endedOn"] == bad["sentOn"]

        port2 = free_port()
        config2 = write_toml(
            tmp_path / "broker2.toml", kafka_settings, kapua | {"instance_id": "a2"}, port2
        )
        second = BrokerProcess(config2, tmp_path / "second.log", port2)
        await second.start()
        try:

            async def terminal_published() -> bool:
                return any(
                    r.event.id == f"{op.id}:COMPLETED" for r in await read_events(kafka_settings)
                )

            await eventually(terminal_published, 120, "the terminal event published", 0.5)
        finally:
            assert await second.stop() == 0

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
