"""Every way a Kapua operation ends is an event, and a broken discovery is supervised.

Driven through the simulator's control API (HTTP), through a real BrokerApp, into a real Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from adapters.kapua.client import KapuaClient
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.events import EventType
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    adapter_of,
    closed_total,
    create_all_topics,
    eventually,
    kapua_section,
    owning_kapua_app,
    read_events,
    read_topic_raw,
    wait_owning,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[KapuaSimulator]:
    async with KapuaSimulator(SimConfig(devices=2)) as simulator:
        yield simulator


async def control(sim: KapuaSimulator, path: str, body: dict[str, Any]) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sim.root_url}/control/{path}", json=body) as response,
    ):
        assert response.status in (200, 204), await response.text()
        return await response.json() if response.status == 200 else None


def metric(app: BrokerApp, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_stale_unknown_deleted_and_mismatched_outcomes_are_one_event_each(
    sim: KapuaSimulator, kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    kapua = kapua_section(
        sim,
        topic_prefix,
        watch_topic_enabled=False,
        unknown_status_grace_s=1.0,
        operation_check_interval_s=0.3,
    )
    await create_all_topics(kafka_settings)
    async with owning_kapua_app(kafka_settings, kapua) as app:
        common = {"count": 1, "steps": 2, "stepIntervalS": 0.3}
        stale = (await control(sim, "operations", common | {"endStatus": "STALE"}))["operations"]
        cancelled = (await control(sim, "operations", common | {"endStatus": "CANCELLED"}))[
            "operations"
        ]
        doomed = (await control(sim, "operations", common | {"steps": 400}))["operations"]
        lying = (await control(sim, "operations", common | {"steps": 3}))["operations"]
        stale_id, cancelled_id = stale[0]["id"], cancelled[0]["id"]
        doomed_id, lying_id = doomed[0]["id"], lying[0]["id"]
        wrong = await control(
            sim, f"operations/{lying_id}/rows", {"operationId": "someOtherOp0", "progress": 7}
        )

        async def doomed_rows_seen() -> bool:
            return any(r["operationId"] == doomed_id for r in sim.state.returned.values())

        adapter = adapter_of(app)
        await eventually(doomed_rows_seen, 30, "rows of the operation to delete returned")

        async def doomed_seen() -> bool:  # a status was seen (rows): the one to report
            watched = adapter.scheduler.ops.get(f"kapua/op/AQ/{doomed_id}")
            return watched is not None and watched.last_row_status == "RUNNING"

        await eventually(doomed_seen, 30, "rows of the operation were published", every_s=0.05)
        await control(sim, f"operations/{doomed_id}/delete", {})

        async def all_ended() -> bool:
            return closed_total(adapter) == 4 and not adapter.scheduler.ops

        await eventually(all_ended, 60, "the four operations ended and are unwatched")
        # No watch is left polling: two more discovery rounds, and not one poll of those four.
        polled = {op: sum(n for _, n in sim.state.polls.get(op, [])) for op in sim.state.polls}
        listed = metric(
            app, "mdm_broker_kapua_poll_requests_total", endpoint="operations", outcome="ok"
        )

        async def two_more_rounds() -> bool:
            now = metric(
                app, "mdm_broker_kapua_poll_requests_total", endpoint="operations", outcome="ok"
            )
            return now >= listed + 4  # 2 devices x 2 rounds

        await eventually(two_more_rounds, 30, "two more discovery rounds")
        after = {op: sum(n for _, n in sim.state.polls.get(op, [])) for op in sim.state.polls}
        for op in (stale_id, cancelled_id, doomed_id, lying_id):
            assert after.get(op) == polled.get(op), f"operation {op} still polled after its end"
        assert not adapter.scheduler.ops

    records = await read_events(kafka_settings)
    by_id: dict[str, set[EventType]] = {}
    for r in records:
        by_id.setdefault(r.event.id, set()).add(r.event.type)
    ending = {
        stale_id: (f"{stale_id}:STALE", EventType.OPERATION_STALE),
        cancelled_id: (f"{cancelled_id}:CANCELLED", EventType.UNKNOWN),
        doomed_id: (f"{doomed_id}:VANISHED", EventType.OPERATION_VANISHED),
        lying_id: (f"{lying_id}:COMPLETED", EventType.OPERATION_COMPLETED),
    }
    for op_id, (event_id, event_type) in ending.items():
        assert by_id.get(event_id) == {event_type}, (op_id, by_id.get(event_id))
        ends = {
            r.event.id
            for r in records
            if r.event.data.get("operation_id", op_id) == op_id
            and r.event.subject is not None
            and r.event.subject.endswith(op_id)
            and r.event.type is not EventType.OPERATION_PROGRESSED
        }
        assert ends == {event_id}, f"operation {op_id}: one end event expected, got {ends}"
    unknown = next(r.event for r in records if r.event.id == f"{cancelled_id}:CANCELLED")
    assert unknown.vendortype == "CANCELLED"
    assert unknown.data["raw"]["status"] == "CANCELLED"
    assert unknown.data["raw"]["id"] == cancelled_id
    vanished = next(r.event for r in records if r.event.id == f"{doomed_id}:VANISHED")
    assert vanished.data["last_status"] == "RUNNING"
    assert vanished.data["raw"]["kapuaErrorCode"] == "ENTITY_NOT_FOUND"
    stale_event = next(r.event for r in records if r.event.id == f"{stale_id}:STALE")
    assert stale_event.data["raw"]["status"] == "STALE"
    # The lying row is not an event; it is in the DLQ, exactly as Kapua returned it.
    assert wrong["id"] not in by_id
    dlq = await read_topic_raw(kafka_settings.bootstrap_servers, kafka_settings.dlq_topic)
    assert [orjson.loads(v or b"") for _, _, _, v in dlq] == [wrong]
    assert metric(app, "mdm_broker_dead_lettered_total", vendor="kapua", reason="mismatch") == 1
    for outcome in ("stale", "unknown_status", "deleted", "completed"):
        assert metric(app, "mdm_broker_kapua_operations_closed_total", outcome=outcome) == 1


async def readyz(app: BrokerApp) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{app.base_url}/readyz") as response,
    ):
        return response.status, await response.json()


async def test_discovery_fed_bad_bodies_restarts_is_counted_and_shows_in_readyz(
    sim: KapuaSimulator,
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False)
    settings = BrokerSettings(
        kafka=kafka_settings,
        http={"host": "127.0.0.1", "port": 0},
        kapua=kapua,
        supervisor={
            "grace_s": 1.5,
            "stable_after_s": 1.0,
            "restart_initial_s": 0.1,
            "restart_max_s": 0.3,
        },
    )
    await create_all_topics(kafka_settings)
    app = BrokerApp(settings, CollectorRegistry(), factories(settings, ["kapua"]))
    caplog.set_level(logging.ERROR, logger="broker.supervisor")
    await app.start()
    failures = "mdm_broker_task_failures_total"
    try:
        await wait_owning([adapter_of(app)])
        assert (await readyz(app))[0] == 200
        for mode in ("non_json", "schema"):
            before = metric(app, failures, task="kapua-discovery")
            await control(sim, "faults", {"badBody": mode, "badBodyKinds": ["devices"]})

            async def crashing(before: float = before) -> bool:
                return metric(app, failures, task="kapua-discovery") >= before + 2

            await eventually(crashing, 30, f"discovery fails on {mode} bodies", every_s=0.1)

            async def not_ready() -> bool:
                status, body = await readyz(app)
                return status == 503 and "task:kapua-discovery" in body.get("problems", {})

            await eventually(not_ready, 30, f"/readyz names discovery ({mode})", every_s=0.1)
            _, body = await readyz(app)
            assert "KapuaBadResponseError" in body["problems"]["task:kapua-discovery"]
            assert metric(app, "mdm_broker_task_restarts_total", task="kapua-discovery") >= 1
            assert (
                metric(
                    app,
                    "mdm_broker_vendor_api_errors_total",
                    vendor="kapua",
                    operation="devices",
                    status="bad_body",
                )
                >= 2
            )
        # The traceback of the failure is in the log.
        crashes = [r for r in caplog.records if "kapua-discovery" in r.getMessage()]
        assert crashes
        assert crashes[0].exc_info is not None
        # Kapua answers properly again: discovery runs stably, /readyz is green, work flows.
        await control(sim, "faults", {})

        async def ready_again() -> bool:
            return (await readyz(app))[0] == 200

        await eventually(ready_again, 30, "/readyz green again", every_s=0.1)
        started = await control(sim, "operations", {"count": 1, "steps": 2, "stepIntervalS": 0.2})
        op_id = started["operations"][0]["id"]

        async def published() -> bool:
            return closed_total(adapter_of(app)) >= 1

        await eventually(published, 30, "an operation discovered after recovery ends")
    finally:
        await app.stop()
    records = await read_events(kafka_settings)
    assert f"{op_id}:COMPLETED" in {r.event.id for r in records}


async def test_rows_after_a_phase_end_are_published_when_the_operation_closed_meanwhile(
    kafka_settings: KafkaSettings, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One page lists a DEPLOY-V2 download's RUNNING and COMPLETED rows and the install's first
    RUNNING row; Kapua closes the operation (install COMPLETED, rows deleted) just before the
    poller reads the record for the COMPLETED row. That row did not close the operation
    (``endedOn`` is the install row's ``sentOn``): it and the install row after it are progress,
    then the terminal event comes from the record. None of the listed rows is dropped."""
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False)
        await create_all_topics(kafka_settings)
        device = next(iter(sim.state.devices["AQ"]))
        # download RUNNING, download COMPLETED, install RUNNING, install COMPLETED (closes);
        # an hour apart: driven by hand.
        op = sim.state.start_operation(
            "AQ", device, steps=1, step_interval_s=3600, fail=False, install=True
        )
        listed: list[dict[str, Any]] = []
        read_record = KapuaClient.get_operation

        async def close_first(self: KapuaClient, scope: str, dev: str, op_id: str) -> Any:
            if listed and all(r["id"] in sim.state.returned for r in listed):
                sim.state.advance(op.steps[3].at)  # Kapua closes it before the record is read
            return await read_record(self, scope, dev, op_id)

        monkeypatch.setattr(KapuaClient, "get_operation", close_first)
        async with owning_kapua_app(kafka_settings, kapua) as app:
            sim.state.advance(op.steps[2].at)  # three rows at once: one page
            listed.extend(op.rows)
            assert [(r["resource"], r["status"]) for r in listed] == [
                ("download", "RUNNING"),
                ("download", "COMPLETED"),
                ("install", "RUNNING"),
            ]

            async def closed() -> bool:
                return op.doc["status"] == "COMPLETED" and closed_total(adapter_of(app)) == 1

            await eventually(closed, 60, "the operation closed and its end published")
        events = [r.event for r in await read_events(kafka_settings)]
    closing_row = op.doc["endedOn"]
    assert closing_row not in {r["sentOn"] for r in listed}  # the install row, never listed
    by_id = {e.id: e for e in events}
    for row in listed:
        assert by_id[row["id"]].type is EventType.OPERATION_PROGRESSED, row
    terminal = by_id[f"{op.id}:COMPLETED"]
    assert terminal.data["observed_via"] == "operation"
    assert [e.id for e in events] == [*(r["id"] for r in listed), terminal.id]  # terminal last
