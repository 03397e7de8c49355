"""The broker SIGKILLed after publishing sets but before acknowledging them (subprocess broker).

The simulator swallows acknowledgements ("blackhole": they never take effect), so every set the
broker published is still unacknowledged when it is killed. After the ack deadline the simulator
redelivers the notifications in new sets; a second broker publishes them again with the same
event ids, and an idempotent consumer handles each exactly once.
"""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest

from adapters.android.normalize import notification_id
from broker.events import CanonicalEvent
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import SimulatorConfig
from tests.e2e.android.support import (
    handled_by_idempotent_consumer,
    read_events,
    simulator_with_key,
    wait_until,
)
from tests.fault.android.broker_process import kafka_http_toml, start_broker, stop

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 300


def _write_config(path: Path, kafka: KafkaSettings, server: SimulatorServer, key: Path) -> None:
    path.write_text(
        kafka_http_toml(kafka)
        + f"""
[android]
enabled = true
service_account_file = "{key}"
token_url = "{server.token_url}"
api_base_url = "{server.api_base_url}"
pullers = 4
ack_budget_s = 3.0
pull_timeout_s = 10.0
api_timeout_s = 3.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
"""
    )


async def test_sigkill_between_publish_and_ack_redelivers_with_same_ids(
    tmp_path: Path, kafka_settings: KafkaSettings, kafka_bootstrap: str
) -> None:
    await create_topics(kafka_settings)
    key = tmp_path / "sa.json"
    sim = simulator_with_key(
        key, SimulatorConfig(hold_s=0.5, ack_deadline_s=2.0, max_set_size=100, rate_limit_qpm=None)
    )
    sim.set_ack_mode("blackhole")
    notifications = generate(TOTAL, enterprises=3, seed=11)
    expected = {notification_id(n) for n in notifications}
    config = tmp_path / "broker.toml"
    log_path = tmp_path / "broker.log"

    async with SimulatorServer(sim) as server:
        _write_config(config, kafka_settings, server, key)
        first = start_broker(config, log_path)
        try:
            sim.pool.enqueue(notifications)
            # Everything published to Kafka, and acks attempted but never applied.
            first_pass = await read_events(
                kafka_bootstrap, kafka_settings.events_topic, TOTAL, timeout_s=60
            )
            assert {e.id for e in first_pass} == expected, log_path.read_text()[-3000:]
            assert sim.blackholed_acks
        finally:
            assert await stop(first, signal.SIGKILL) == -signal.SIGKILL
        assert sim.pool.stats.acked_sets == 0

        # Acks work again; the unacked sets expire and come back in new sets.
        sim.set_ack_mode("normal")
        second = start_broker(config, log_path)
        try:
            assert await wait_until(lambda: sim.pool.stats.acked_notifications >= TOTAL, 60), (
                sim.stats()
            )
        finally:
            assert await stop(second, signal.SIGTERM) == 0, log_path.read_text()[-3000:]

    stats = sim.pool.stats
    assert stats.redelivered_notifications >= TOTAL
    assert stats.expired_sets >= 1
    acked_set_ids = {r.set_id for r in sim.pool.acked}
    assert not acked_set_ids & set(sim.blackholed_acks)  # redelivered under new set ids

    records = await read_events(kafka_bootstrap, kafka_settings.events_topic, TOTAL)
    counts = collections.Counter(e.id for e in records)
    assert set(counts) == expected
    duplicated = [i for i, c in counts.items() if c >= 2]
    assert len(duplicated) == TOTAL  # every notification was published twice, same id
    by_id: dict[str, list[CanonicalEvent]] = collections.defaultdict(list)
    for event in records:
        by_id[event.id].append(event)
    for copies in by_id.values():
        assert all(c == copies[0] for c in copies)  # identical content, key, partition key

    # An idempotent consumer handles each notification once.
    handled = await handled_by_idempotent_consumer(
        kafka_settings, kafka_bootstrap, TOTAL, len(records)
    )
    assert set(handled) == expected
    assert set(handled.values()) == {1}
