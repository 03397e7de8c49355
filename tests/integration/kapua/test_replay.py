"""`dlq replay` of Kapua dead letters (real Kafka, the simulator): a row the poller dead-lettered
under the old mapping is replayed after a mapping fix as the event it would have been."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import field_validator

import adapters.kapua.replay as kapua_replay
from adapters.kapua.models import Notification
from broker.app.registry import renormalizers
from broker.dlq import DlqFilter, read_dead_letters, replay
from broker.events import EventType
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    broker_settings,
    create_all_topics,
    eventually,
    kapua_section,
    owning_kapua_app,
    read_events,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[KapuaSimulator]:
    async with KapuaSimulator(SimConfig(devices=1)) as simulator:
        yield simulator


class PercentProgress(Notification):
    """The "fix": a device firmware that reports ``progress`` as ``"42%"`` is now understood."""

    @field_validator("progress", mode="before")
    @classmethod
    def _strip_percent(cls, value: Any) -> Any:
        return value.rstrip("%") if isinstance(value, str) else value


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
