"""``mdm-broker kafka-check``: can the broker's principal do everything the broker needs?

Connects with the configured ``kafka.security`` (so it tests TLS, the CA, the host name and the
SASL credentials), then checks, for the principal it authenticated as:

* every topic exists and is visible (DESCRIBE): events, DLQ, state (+ extra read topics);
* WRITE on events, DLQ and state (an empty Produce request: nothing is written, see
  :mod:`broker.kafka_access`);
* READ on the state topic and on extra read topics (one fetch, no group);
* READ on each consumer group the broker joins (Kapua shards).

Each check is one :class:`CheckRow`; a failed connection stops after the first row. Nothing is
created or written, so it is safe against production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from broker.kafka_access import Access, group_access, read_access, write_access
from broker.kafka_diagnosis import capture_aiokafka_errors, diagnose
from broker.kafka_security import client_kwargs

if TYPE_CHECKING:
    from broker.settings import KafkaSettings

_FIX = {
    "DESCRIBE": "create the topic (`mdm-broker topics create`) or grant DESCRIBE on it",
    "WRITE": "grant WRITE (and DESCRIBE) on the topic to this principal",
    "READ": "grant READ (and DESCRIBE) on the topic to this principal",
    "GROUP READ": "grant READ on the consumer group to this principal",
}


@dataclass(frozen=True)
class CheckRow:
    check: str
    resource: str
    result: str  # "ok", "DENIED", "MISSING", "FAILED", "UNKNOWN"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result == "ok"


async def run_checks(
    kafka: KafkaSettings,
    *,
    groups: Sequence[str] = (),
    read_topics: Sequence[str] = (),
) -> list[CheckRow]:
    """All checks, in order; see the module docstring. Never raises for a Kafka refusal."""
    kwargs = client_kwargs(kafka.security)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-check",
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
        **kwargs,
    )
    connect = f"{kafka.bootstrap_servers} as {kafka.security.describe()}"
    with capture_aiokafka_errors() as lines:
        try:
            await asyncio.wait_for(admin.start(), kafka.request_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await admin.close()
            diagnosis = diagnose(exc, lines, kafka.security.ssl_cert_file)
            return [CheckRow("connect + authenticate", connect, "FAILED", diagnosis.summary)]
    rows = [CheckRow("connect + authenticate", connect, "ok")]
    try:
        listed = set(await admin.list_topics())
        write_topics = [kafka.events_topic, kafka.dlq_topic, kafka.state_topic]
        readable = [kafka.state_topic, *read_topics]
        for topic in dict.fromkeys([*write_topics, *read_topics]):
            result = "ok" if topic in listed else "MISSING"
            detail = "" if topic in listed else "missing, or DESCRIBE denied: " + _FIX["DESCRIBE"]
            rows.append(CheckRow("DESCRIBE", f"topic {topic}", result, detail))
        client = admin._client  # the connected AIOKafkaClient (aiokafka has no public accessor)
        for topic in write_topics:
            access = await write_access(client, topic)
            rows.append(_row("WRITE", f"topic {topic}", access))
        for topic in readable:
            if topic not in listed:
                rows.append(CheckRow("READ", f"topic {topic}", "MISSING", "topic not visible"))
                continue
            access = await read_access(kafka.bootstrap_servers, topic, kwargs)
            rows.append(_row("READ", f"topic {topic}", access))
        for group in groups:
            access = await group_access(admin, group)
            rows.append(_row("GROUP READ", f"group {group}", access))
    finally:
        await admin.close()
    return rows


def _row(check: str, resource: str, access: Access) -> CheckRow:
    if access is Access.ALLOWED:
        return CheckRow(check, resource, "ok")
    if access is Access.MISSING:
        return CheckRow(check, resource, "MISSING", _FIX["DESCRIBE"])
    return CheckRow(check, resource, access.value, _FIX[check])


def format_table(rows: Sequence[CheckRow]) -> str:
    """A plain-text table, one row per check, then a verdict line."""
    header = ("CHECK", "RESOURCE", "RESULT", "HOW TO FIX")
    table = [header, *((r.check, r.resource, r.result, r.detail) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    out = [
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(line)).rstrip()
        for line in table
    ]
    failed = sum(not r.ok for r in rows)
    out.append(f"{len(rows) - failed} ok, {failed} failed" if failed else f"all {len(rows)} ok")
    return "\n".join(out)
