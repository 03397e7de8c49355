"""Kapua adapter in a real BrokerApp: simulator -> broker -> real Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from broker.app.runtime import BrokerApp
from broker.settings import KafkaSettings
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import (
    adapter_of,
    check_delivery,
    create_all_topics,
    eventually,
    kapua_app,
    kapua_section,
    owning_kapua_app,
    read_events,
    read_kapua_state,
    read_topic_raw,
    send_watch_requests,
    wait_operations_closed,
    wait_owning,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[KapuaSimulator]:
    async with KapuaSimulator(SimConfig(devices=5, token_ttl_s=1.2)) as simulator:
        yield simulator


def metric(app: BrokerApp, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_discovered_operations_are_published_with_faults_token_expiry_and_deletion(
    sim: KapuaSimulator, kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False)
    await create_all_topics(kafka_settings)
    async with owning_kapua_app(kafka_settings, kapua) as app:
        ops = [
            sim.state.start_operation(
                "AQ", device, steps=4, step_interval_s=0.4, fail=i % 3 == 2, start_delay_s=0.3
            )
            for i, device in enumerate(list(sim.state.devices["AQ"]) * 3)
        ]
        doomed = ops[0].id
        sim.state.faults.fail_500_rate = 0.1  # device-management timeouts on 10% of requests

        async def first_rows_seen() -> bool:
            return any(r["operationId"] == doomed for r in sim.state.returned.values())

        await eventually(first_rows_seen, 30, "rows of the doomed operation returned")
        sim.state.delete_operation(doomed)  # deleted under us: the next read is a 404
        assert sim.state.expire_all_tokens() >= 1  # next request: 401 with an empty body

        await wait_operations_closed(sim, app, len(ops), "all operations closed and unwatched")
        sim.state.faults.fail_500_rate = 0.0
    records = await read_events(kafka_settings)
    counts = check_delivery(sim, records, deleted=frozenset({doomed}))
    assert counts["terminal"] == len(ops) - 1
    assert counts["returned"] > 0
    # each fault handled and counted
    assert metric(app, "mdm_broker_kapua_operations_closed_total", outcome="deleted") == 1
    assert metric(app, "mdm_broker_kapua_operations_closed_total", outcome="completed") == 9
    assert metric(app, "mdm_broker_kapua_operations_closed_total", outcome="failed") == 5
    errors_500 = sum(
        metric(
            app, "mdm_broker_vendor_api_errors_total", vendor="kapua", operation=op, status="500"
        )
        for op in ("notifications", "notifications_count", "operation", "operations", "devices")
    )
    assert errors_500 > 0
    assert (
        metric(
            app,
            "mdm_broker_vendor_api_errors_total",
            vendor="kapua",
            operation="operation",
            status="404",
        )
        >= 1
    )
    token_events = {
        e: metric(app, "mdm_broker_kapua_token_events_total", event=e) for e in ("login", "refresh")
    }
    assert token_events["login"] >= 1
    assert token_events["refresh"] >= 1  # 1.2 s tokens: refreshed ahead of expiry
    state = await read_kapua_state(kafka_settings)
    assert {r.kind for r in state.values()} == {"done"}
    assert {r.status for r in state.values()} == {"COMPLETED", "FAILED", "DELETED"}


async def test_watch_requests_restart_resumes_without_republishing(
    sim: KapuaSimulator, kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    kapua = kapua_section(sim, topic_prefix, scopes=[])
    watch_topic = kapua["watch_topic"]
    await create_all_topics(kafka_settings, watch_topic)
    devices = list(sim.state.devices["AQ"])
    ops = [
        sim.state.start_operation("AQ", d, steps=6, step_interval_s=0.3, fail=False)
        for d in devices
    ]
    requests = [
        orjson.dumps({"scopeId": "AQ", "deviceId": op.doc["deviceId"], "operationId": op.id})
        for op in ops
    ]
    await send_watch_requests(kafka_settings.bootstrap_servers, watch_topic, [b"{bad", *requests])

    first = kapua_app(kafka_settings, kapua)
    await first.start()
    try:
        await wait_owning([adapter_of(first)])

        async def some_progress() -> bool:
            return len(sim.state.returned) >= len(ops)

        await eventually(some_progress, 30, "first rows polled")
    finally:
        await first.stop()  # graceful: in-flight polls checkpoint before the group is left
    before = await read_events(kafka_settings)
    assert metric(first, "mdm_broker_kapua_watch_requests_total", outcome="accepted") == len(ops)
    assert metric(first, "mdm_broker_kapua_watch_requests_total", outcome="invalid") == 1
    dlq = await read_topic_raw(kafka_settings.bootstrap_servers, kafka_settings.dlq_topic)
    assert [v for _, _, _, v in dlq] == [b"{bad"]

    second = kapua_app(kafka_settings, kapua)
    await second.start()
    try:
        await wait_operations_closed(sim, second, len(ops), "all watched operations closed")
    finally:
        await second.stop()
    records = await read_events(kafka_settings)
    counts = check_delivery(sim, records)
    assert counts["terminal"] == len(ops)
    # graceful restart: everything published before was checkpointed -> no duplicates at all
    assert counts["duplicates"] == 0, counts
    assert len(before) < len(records)
    # the restarted instance did not re-read the watch topic (offsets were committed)
    assert metric(second, "mdm_broker_kapua_watch_requests_total", outcome="accepted") == 0


async def test_rows_inserted_before_the_window_by_skewed_device_clocks_are_not_missed(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    # Device clocks up to 3 s behind: new rows sort before rows already published, so the
    # poller must notice (totalCount) and rescan from offset 0.
    config = SimConfig(devices=4, sent_on_skew_s=3.0)
    async with KapuaSimulator(config) as sim:
        kapua = kapua_section(
            sim, topic_prefix, watch_topic_enabled=False, resort_window=0, page_limit=3
        )
        await create_all_topics(kafka_settings)
        async with owning_kapua_app(kafka_settings, kapua) as app:
            ops = [
                sim.state.start_operation("AQ", d, steps=12, step_interval_s=0.15, fail=False)
                for d in list(sim.state.devices["AQ"]) * 2
            ]

            await wait_operations_closed(sim, app, len(ops), "all operations closed")
        records = await read_events(kafka_settings)
    ids = [r.event.id for r in records]
    missing = set(sim.state.returned) - set(ids)
    assert not missing, f"{len(missing)} returned rows not published"
    assert len(ids) == len(set(ids)), "a row was published twice"
    assert len({i for i in ids if ":" in i}) == len(ops)


async def test_terminal_row_seen_before_close_becomes_the_single_terminal_event(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    # Kapua writes the COMPLETED/FAILED row, then closes the operation and deletes its rows:
    # here the row lingers 1 s so the poller sees it while the operation is still RUNNING.
    async with KapuaSimulator(SimConfig(devices=3, terminal_row_linger_s=1.0)) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False)
        await create_all_topics(kafka_settings)
        async with owning_kapua_app(kafka_settings, kapua) as app:
            ops = [
                sim.state.start_operation("AQ", d, steps=3, step_interval_s=0.3, fail=i == 0)
                for i, d in enumerate(list(sim.state.devices["AQ"]) * 2)
            ]

            await wait_operations_closed(sim, app, len(ops), "all operations closed")
        records = await read_events(kafka_settings)
        counts = check_delivery(sim, records)
    assert counts["terminal"] == len(ops)
    progressed = [r for r in records if r.event.type.value == "mdm.operation.progressed"]
    assert all(r.event.vendortype == "RUNNING" for r in progressed)
    terminal = [r.event for r in records if ":" in r.event.id]
    via_row = [e for e in terminal if e.data["observed_via"] == "notification"]
    assert via_row, "no terminal row was observed before the close"
    for event in via_row:
        assert event.data["notification_id"] is not None
        assert event.data["log"]  # still the operation record's log


async def test_download_completed_row_of_a_two_phase_operation_is_progress_not_terminal(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    # DEPLOY-V2 with install: "download COMPLETED" does not close the operation (VENDOR_NOTES
    # 3.7); the install phase follows and its COMPLETED/FAILED closes it.
    async with KapuaSimulator(SimConfig(devices=3)) as sim:
        kapua = kapua_section(sim, topic_prefix, watch_topic_enabled=False, terminal_grace_s=0.5)
        await create_all_topics(kafka_settings)
        async with owning_kapua_app(kafka_settings, kapua) as app:
            ops = [
                sim.state.start_operation(
                    "AQ", d, steps=2, step_interval_s=0.4, fail=i == 1, install=True
                )
                for i, d in enumerate(sim.state.devices["AQ"])
            ]

            await wait_operations_closed(sim, app, len(ops), "all operations closed")
        records = await read_events(kafka_settings)
        counts = check_delivery(sim, records)
    assert counts["terminal"] == len(ops)
    phase_ends = [
        r.event
        for r in records
        if r.event.type.value == "mdm.operation.progressed" and r.event.vendortype == "COMPLETED"
    ]
    assert {e.data["resource"] for e in phase_ends} == {"download"}
    assert {str(e.data["operation_id"]) for e in phase_ends} <= {op.id for op in ops}
    downloads_returned = [
        r
        for r in sim.state.returned.values()
        if r["status"] == "COMPLETED" and r["resource"] == "download"
    ]
    assert len(phase_ends) == len(downloads_returned) > 0
    statuses = {e.id.split(":")[1] for r in records if ":" in (e := r.event).id}
    assert statuses == {"COMPLETED", "FAILED"}
