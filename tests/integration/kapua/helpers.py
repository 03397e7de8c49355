"""Helpers shared by the Kapua integration, e2e and fault tests (real Kafka, the simulator)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import field_validator

from adapters.kapua.adapter import KapuaAdapter
from adapters.kapua.cursors import OpRecord, OpSlots, merge, resolve_all
from adapters.kapua.models import Notification
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.devtools.devkafka import free_port
from broker.events import CanonicalEvent, decode_event
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.kapua import KapuaSimulator


class PercentProgress(Notification):
    """A mapping "fix" for replay tests: a device firmware that reports ``progress`` as ``"42%"``
    is now understood."""

    @field_validator("progress", mode="before")
    @classmethod
    def _strip_percent(cls, value: Any) -> Any:
        return value.rstrip("%") if isinstance(value, str) else value


FAST_KAPUA: dict[str, Any] = {
    "enabled": True,
    "username": "kapua-sys",
    "password": "kapua-password",
    "scopes": [{"scope_id": "_"}],
    "session_timeout_s": 6.0,
    "heartbeat_interval_s": 0.5,
    "discovery_interval_s": 0.5,
    "poll_interval_min_s": 0.2,
    "poll_interval_max_s": 0.6,
    "operation_check_interval_s": 1.0,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.5,
    "max_requests_per_s": 2000,
    "max_concurrent_requests": 32,
    "watch_retry_s": 0.2,
}


def kapua_section(sim: KapuaSimulator, group: str, **overrides: Any) -> dict[str, Any]:
    values = dict(FAST_KAPUA, base_url=sim.base_url, group_id=group, watch_topic=f"{group}.watch")
    values.update(overrides)
    return values


def broker_settings(kafka: KafkaSettings, kapua: dict[str, Any]) -> BrokerSettings:
    return BrokerSettings(kafka=kafka, http={"host": "127.0.0.1", "port": 0}, kapua=kapua)


def kapua_app(kafka: KafkaSettings, kapua: dict[str, Any]) -> BrokerApp:
    """A broker with only the Kapua adapter, on its own metrics registry."""
    settings = broker_settings(kafka, kapua)
    return BrokerApp(settings, CollectorRegistry(), factories(settings, ["kapua"]))


@contextlib.asynccontextmanager
async def owning_kapua_app(kafka: KafkaSettings, kapua: dict[str, Any]) -> AsyncIterator[BrokerApp]:
    """:func:`kapua_app` started and its adapter owning its shards (:func:`wait_owning`);
    stopped on exit."""
    app = kapua_app(kafka, kapua)
    await app.start()
    try:
        await wait_owning([adapter_of(app)])
        yield app
    finally:
        await app.stop()


def write_toml(path: Path, kafka: KafkaSettings, kapua: dict[str, Any], port: int) -> Path:
    """A config file for `mdm-broker run` (only Kapua enabled)."""

    def lit(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[kafka]"]
    for name in ("bootstrap_servers", "events_topic", "dlq_topic", "state_topic"):
        lines.append(f"{name} = {lit(getattr(kafka, name))}")
    lines += [
        "publish_timeout_s = 10.0",
        f"[http]\nport = {port}",
        '[log]\nlevel = "INFO"',
        "[kapua]",
    ]
    scopes = kapua.get("scopes", [])
    for name, value in kapua.items():
        if name != "scopes":
            lines.append(f"{name} = {lit(value)}")
    for scope in scopes:
        lines.append("[[kapua.scopes]]")
        lines.append(f"scope_id = {lit(scope['scope_id'])}")
    path.write_text("\n".join(lines) + "\n")
    return path


async def create_all_topics(kafka: KafkaSettings, watch_topic: str | None = None) -> None:
    await create_topics(kafka)
    if watch_topic is None:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(watch_topic, 2, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: str
    event: CanonicalEvent


async def read_topic_raw(
    bootstrap: str, topic: str, end: dict[int, int] | None = None
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of ``topic`` up to its current end (or ``end`` offsets), within 60 s."""
    async with asyncio.timeout(60):
        return await _read_topic_raw(bootstrap, topic, end)


async def _read_topic_raw(
    bootstrap: str, topic: str, end: dict[int, int] | None
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)  # aiokafka: stop() right after start() re-raises a CancelledError
    out: list[tuple[int, int, bytes | None, bytes | None]] = []
    try:
        parts = await _partitions(consumer, topic)
        if not parts:
            return out
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = (
            end
            if end is not None
            else {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        )
        remaining = {tp for tp in tps if ends.get(tp.partition, 0) > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        out.append((tp.partition, r.offset, r.key, r.value))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp.partition]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    # partitions_for_topic() only reads the metadata cache of subscribed topics
    metadata = await consumer._client.fetch_all_metadata()
    return sorted(metadata.partitions_for_topic(topic) or ())


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)
    try:
        parts = await _partitions(consumer, topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def read_events(kafka: KafkaSettings, end: dict[int, int] | None = None) -> list[Record]:
    raw = await read_topic_raw(kafka.bootstrap_servers, kafka.events_topic, end)
    return [
        Record(p, o, (k or b"").decode(), decode_event(v or b""))
        for p, o, k, v in sorted(raw, key=lambda r: (r[0], r[1]))
    ]


async def read_kapua_state(kafka: KafkaSettings) -> dict[str, OpRecord]:
    """The merged state of every operation, keyed by operation key (as an owner loads it)."""
    raw = await read_topic_raw(kafka.bootstrap_servers, kafka.state_topic)
    state: dict[str, OpSlots] = {}
    for _, _, key, value in sorted(raw, key=lambda r: (r[0], r[1])):
        merge(state, (key or b"").decode(), None if value is None else orjson.loads(value))
    return resolve_all(state)


async def send_watch_requests(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with asyncio.timeout(60):
            for value in values:
                await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.5
) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after ``timeout_s`` (a bound, not a
    speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s}s: {what}")
        await asyncio.sleep(every_s)


async def wait_owning(adapters: list[KapuaAdapter], timeout_s: float = 60) -> None:
    """Wait until the instances together own and have loaded every state partition."""

    async def check() -> bool:
        count = max(a.shard.partition_count for a in adapters)
        loaded = [p for a in adapters for p in a.shard.loaded]
        return count > 0 and sorted(loaded) == list(range(count))

    await eventually(check, timeout_s, "state partitions assigned and loaded", every_s=0.1)


def closed_total(adapter: KapuaAdapter) -> float:
    registry = adapter.metrics.broker.registry
    return sum(
        registry.get_sample_value("mdm_broker_kapua_operations_closed_total", {"outcome": o}) or 0.0
        for o in ("completed", "failed", "deleted", "stale", "unknown_status")
    )


def all_closed(sim: KapuaSimulator) -> bool:
    return all(op.doc["status"] != "RUNNING" for op in sim.state.operations.values())


def check_delivery(
    sim: KapuaSimulator, records: list[Record], deleted: frozenset[str] = frozenset()
) -> dict[str, int]:
    """The delivery contract of the issue, asserted against what the simulator recorded.

    * every row the simulator returned to a poll is in Kafka (by notification id, or for a
      terminal row by its operation's terminal id);
    * every closed operation has exactly one terminal id in Kafka (duplicates of that id allowed,
      but never two different terminal ids), with the operation's final status;
    * per operation: progress events in sentOn order and the terminal event after all of them;
    * all events of a device are in one partition under the key kapua:{scope}:{device}.
    Returns counters for the caller's own assertions.
    """
    by_id: dict[str, list[Record]] = {}
    for r in records:
        by_id.setdefault(r.event.id, []).append(r)
    missing = [
        rid
        for rid, row in sim.state.returned.items()
        if rid not in by_id and f"{row['operationId']}:{row['status']}" not in by_id
    ]  # a COMPLETED/FAILED row seen before the close is carried by the terminal event
    assert not missing, f"{len(missing)} returned rows never reached Kafka, e.g. {missing[:3]}"
    terminal_total = 0
    for op_id, op in sim.state.operations.items():
        status = op.doc["status"]
        ids = {f"{op_id}:COMPLETED", f"{op_id}:FAILED"} & set(by_id)
        if status == "RUNNING":
            assert not ids, f"terminal event for running operation {op_id}"
            continue
        assert ids == {f"{op_id}:{status}"}, (
            f"operation {op_id}: terminal ids {ids}, status {status}"
        )
        terminal_total += 1
    for op_id in deleted:
        assert not {f"{op_id}:COMPLETED", f"{op_id}:FAILED"} & set(by_id)
    partitions: dict[str, set[int]] = {}
    per_op: dict[str, list[Record]] = {}
    for r in records:
        partitions.setdefault(r.key, set()).add(r.partition)
        assert r.key == r.event.partitionkey
        per_op.setdefault(str(r.event.data["operation_id"]), []).append(r)
    assert all(len(p) == 1 for p in partitions.values()), "a device's events span partitions"
    for op_id, rows in per_op.items():
        rows.sort(key=lambda r: r.offset)
        first_seen: list[Record] = []
        seen: set[str] = set()
        for r in rows:
            if r.event.id not in seen:
                seen.add(r.event.id)
                first_seen.append(r)
        progress = [r for r in first_seen if r.event.type.value == "mdm.operation.progressed"]
        times = [r.event.time for r in progress]
        assert times == sorted(times), f"operation {op_id}: progress out of sentOn order"
        terminals = [
            i for i, r in enumerate(first_seen) if r.event.type.value != "mdm.operation.progressed"
        ]
        if terminals:
            assert terminals == [len(first_seen) - 1], f"operation {op_id}: terminal not last"
    return {
        "events": len(records),
        "distinct": len(by_id),
        "duplicates": len(records) - len(by_id),
        "terminal": terminal_total,
        "returned": len(sim.state.returned),
    }


class BrokerProcess:
    """``mdm-broker run --config FILE`` as a child process (stderr to a log file)."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config, self.log, self.port = config, log, port
        self.proc: asyncio.subprocess.Process | None = None
        self._log_file: Any = None

    async def start(self) -> None:
        script = Path(sys.executable).with_name("mdm-broker")
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "broker"]
        self._log_file = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            "run",
            "--config",
            str(self.config),
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Current samples of the broker's /metrics (empty while it does not answer)."""
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{self.port}/metrics") as response,
            ):
                text = await response.text()
        except aiohttp.ClientError:
            return {}
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    async def value(self, name: str, **labels: str) -> float:
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))), 0.0)

    async def owned_partitions(self) -> float:
        m = await self.metrics()
        key = "mdm_broker_kapua_rebalances_total"
        return m.get((key, (("event", "assigned"),)), 0.0) - m.get(
            (key, (("event", "revoked"),)), 0.0
        )

    async def closed(self) -> float:
        m = await self.metrics()
        return sum(
            v for (name, _), v in m.items() if name == "mdm_broker_kapua_operations_closed_total"
        )

    async def kill(self) -> None:
        """SIGKILL: no drain, no checkpoint, no group leave."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self._close_log()

    async def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


async def start_broker(
    tmp_path: Path, kafka: KafkaSettings, kapua: dict[str, Any], name: str, *, owning: bool = True
) -> BrokerProcess:
    """``mdm-broker run`` on a free port with ``kapua`` (``{name}.toml``, stderr in
    ``{name}.log`` under ``tmp_path``). With ``owning``, returns once it owns every state partition
    (killed if it does not within 60 s); without, at once (a successor of a killed broker owns
    them only after the dead member's session expired)."""
    port = free_port()
    config = write_toml(tmp_path / f"{name}.toml", kafka, kapua, port)
    broker = BrokerProcess(config, tmp_path / f"{name}.log", port)
    await broker.start()
    if not owning:
        return broker

    async def owns_all() -> bool:
        return await broker.owned_partitions() == kafka.partitions

    try:
        await eventually(owns_all, 60, f"broker {name} owns the state partitions")
    except BaseException:
        await broker.kill()
        raise
    return broker


def adapter_of(app: BrokerApp) -> KapuaAdapter:
    adapter = app.adapters[0]
    assert isinstance(adapter, KapuaAdapter)
    return adapter


async def wait_operations_closed(
    sim: KapuaSimulator, app: BrokerApp, expected: int, what: str, timeout_s: float = 60
) -> None:
    """Wait until the simulator closed every operation and ``app``'s adapter saw ``expected``
    of them close (terminal event published)."""

    async def finished() -> bool:
        return all_closed(sim) and closed_total(adapter_of(app)) == expected

    await eventually(finished, timeout_s, what)
