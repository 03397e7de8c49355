"""The broker's Kafka topics: what they must look like, creating them, checking them at start-up.

Every topic the broker writes or reads is declared as a :class:`TopicSpec`: the core ones (events,
dead letters, compacted state) from :func:`topic_specs`, and those an enabled adapter needs (e.g.
the Kapua watch-request topic), which the composition root passes in as ``extra``; this module
imports no adapter.

Sizes agree end to end: every topic is created with ``max.message.bytes`` equal to the producer's
``max_request_bytes``, so a record the publisher's size pre-check lets through is one the topic
accepts. An existing topic with a smaller limit is reported by :func:`check_topics` and the
publisher is told its real limit.

:func:`create_topics` is idempotent: topics that already exist are left as they are (partition
count and configuration unchanged; a warning names any difference).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from broker.errors import ConfigError, PublishError
from broker.kafka_security import client_kwargs

if TYPE_CHECKING:
    from broker.settings import KafkaSettings

log = logging.getLogger(__name__)

_UNKNOWN_TOPIC = 3
"""Kafka error code UNKNOWN_TOPIC_OR_PARTITION: the only answer that proves a topic is missing."""


class MissingTopicsError(ConfigError):
    """Required topics do not exist and the cluster will not create them (exit code 2)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    purpose: str = ""
    """What the topic is for, shown by ``topics create`` and in start-up errors."""


@dataclass(frozen=True)
class TopicNeed:
    """A topic an adapter needs, declared by the adapter without Kafka details."""

    name: str
    purpose: str
    compacted: bool = False
    partitions: int | None = None
    """None: ``kafka.partitions``."""


def base_config(settings: KafkaSettings) -> dict[str, str]:
    """Configuration every broker topic gets: durability and the size limit of the producer."""
    min_isr = "2" if settings.replication_factor >= 3 else "1"
    return {
        "min.insync.replicas": min_isr,
        "max.message.bytes": str(settings.max_request_bytes),
    }


def compacted_config(settings: KafkaSettings) -> dict[str, str]:
    return {
        **base_config(settings),
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "60000",
        "segment.ms": "3600000",
    }


def topic_specs(settings: KafkaSettings, needs: Sequence[TopicNeed] = ()) -> list[TopicSpec]:
    """The core topics (events, DLQ, compacted state) and ``needs``, with their configuration."""
    rf = settings.replication_factor
    specs = [
        TopicSpec(
            settings.events_topic,
            settings.partitions,
            rf,
            base_config(settings),
            "canonical events",
        ),
        TopicSpec(settings.dlq_topic, 1, rf, base_config(settings), "dead letters"),
        TopicSpec(
            settings.state_topic,
            settings.partitions,
            rf,
            compacted_config(settings),
            "broker state (compacted)",
        ),
    ]
    known = {s.name for s in specs}
    for need in needs:
        if need.name in known:
            continue
        known.add(need.name)
        config = compacted_config(settings) if need.compacted else base_config(settings)
        specs.append(
            TopicSpec(need.name, need.partitions or settings.partitions, rf, config, need.purpose)
        )
    return specs


def _admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=int(settings.request_timeout_s * 1000),
        **client_kwargs(settings.security),
    )


async def _start(admin: AIOKafkaAdminClient, settings: KafkaSettings) -> None:
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise PublishError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc


async def create_topics(settings: KafkaSettings, needs: Sequence[TopicNeed] = ()) -> list[str]:
    """Create missing topics; returns the names created. Raises PublishError if Kafka is down."""
    return await create_topic_specs(settings, topic_specs(settings, needs))


async def create_topic_specs(settings: KafkaSettings, specs: Sequence[TopicSpec]) -> list[str]:
    """Create those of ``specs`` that are missing (the one topic-creation path of the project);
    returns the names created, once the node answers them in its metadata (bounded by
    ``request_timeout_s``), so a broker started right after does not report them missing.
    Raises PublishError if Kafka is down."""
    admin = _admin(settings)
    await _start(admin, settings)
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                log.info("topic %s exists; left unchanged", spec.name)
                continue
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            spec.replication_factor,
                            topic_configs=spec.config,
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                continue
            created.append(spec.name)
        if created:
            await _until_listed(admin, created, settings.request_timeout_s)
    finally:
        await admin.close()
    return created


async def _until_listed(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Wait until the node lists ``names``: CreateTopics returns once the controller has them,
    the node's metadata follows shortly after, and nothing announces it, so this polls. Past
    ``timeout_s`` it logs and returns (the topics exist; a later check may still miss them)."""
    pending = set(names)
    try:
        async with asyncio.timeout(timeout_s):
            while pending:
                pending -= set(await admin.list_topics())
                if pending:
                    await asyncio.sleep(0.1)
    except TimeoutError:
        log.warning(
            "created topics not listed after %.0fs (metadata lag, or no DESCRIBE right): %s",
            timeout_s,
            sorted(pending),
        )


@dataclass
class TopicReport:
    """What :func:`check_topics` found."""

    missing: list[TopicSpec] = field(default_factory=list)
    auto_create: bool = False
    max_message_bytes: dict[str, int] = field(default_factory=dict)
    """``max.message.bytes`` of each existing topic, as Kafka reports it."""


def _configs(responses: list[Any]) -> dict[tuple[int, str], dict[str, str]]:
    """{(resource type, resource name): {config: value}} from DescribeConfigs responses."""
    found: dict[tuple[int, str], dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            _, _, rtype, rname, entries = resource[:5]
            found[(rtype, rname)] = {e[0]: e[1] for e in entries if e[1] is not None}
    return found


async def check_topics(settings: KafkaSettings, needs: Sequence[TopicNeed] = ()) -> TopicReport:
    """Which required topics are missing, whether the cluster auto-creates topics, and each
    existing topic's ``max.message.bytes``. Raises PublishError when Kafka cannot be reached."""
    admin = _admin(settings)
    await _start(admin, settings)
    report = TopicReport()
    try:
        existing = set(await admin.list_topics())
        specs = topic_specs(settings, needs)
        unlisted = [s.name for s in specs if s.name not in existing]
        if unlisted:  # not listed is not proof: a just-created topic, or no DESCRIBE right
            described = await admin.describe_topics(unlisted)
            absent = {t["topic"] for t in described if t.get("error_code") == _UNKNOWN_TOPIC}
            existing |= {t["topic"] for t in described if t.get("error_code") == 0}
        else:
            absent = set()
        report.missing = [s for s in specs if s.name in absent]
        present = [s.name for s in specs if s.name in existing]
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
            for name in present
        ]
        cluster = await admin.describe_cluster()
        brokers = cluster.get("brokers") or []
        if brokers:
            node = str(brokers[0]["node_id"])
            resources.append(
                ConfigResource(ConfigResourceType.BROKER, node, {"auto.create.topics.enable": None})
            )
        try:
            found = _configs(await admin.describe_configs(resources))
        except KafkaError as exc:  # no DESCRIBE_CONFIGS right: limits unknown, not fatal
            log.warning("cannot read topic and broker configs (%r); size limits unchecked", exc)
            found = {}
        for name in present:
            value = found.get((int(ConfigResourceType.TOPIC), name), {}).get("max.message.bytes")
            if value is not None and value.isdigit():
                report.max_message_bytes[name] = int(value)
        broker_configs = [v for (t, _), v in found.items() if t == int(ConfigResourceType.BROKER)]
        report.auto_create = any(
            c.get("auto.create.topics.enable") == "true" for c in broker_configs
        )
    except KafkaError as exc:
        raise PublishError(f"cannot describe topics: {exc!r}") from exc
    finally:
        await admin.close()
    return report


def require_topics(report: TopicReport, settings: KafkaSettings, config_hint: str) -> None:
    """Raise :class:`MissingTopicsError` (exit 2) when required topics are missing and the
    cluster will not create them; warn about what auto-creation or old topics get wrong."""
    if report.missing and not report.auto_create:
        names = "\n".join(f"  {s.name} ({s.purpose})" for s in report.missing)
        raise MissingTopicsError(
            "required Kafka topic(s) missing and auto.create.topics.enable is off (or not "
            f"readable):\n{names}\n"
            f"fix: mdm-broker topics create {config_hint}".rstrip()
        )
    for spec in report.missing:
        log.warning(
            "topic %s (%s) is missing; Kafka will auto-create it with broker defaults (size "
            "limit, compaction, min.insync.replicas may be wrong): run `mdm-broker topics create`",
            spec.name,
            spec.purpose,
        )
    for name, limit in report.max_message_bytes.items():
        if limit < settings.max_request_bytes:
            log.warning(
                "topic %s takes records up to %d bytes (max.message.bytes), less than "
                "kafka.max_request_bytes=%d: larger records are dead-lettered as record_too_large",
                name,
                limit,
                settings.max_request_bytes,
            )


async def fetch_max_message_bytes(settings: KafkaSettings, topic: str) -> int | None:
    """``topic``'s ``max.message.bytes`` as Kafka reports it, or None when it cannot be read."""
    admin = _admin(settings)
    try:
        await admin.start()
        found = _configs(
            await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
            )
        )
    except (KafkaError, OSError) as exc:
        log.warning("cannot read max.message.bytes of %s: %r", topic, exc)
        return None
    finally:
        await admin.close()
    value = found.get((int(ConfigResourceType.TOPIC), topic), {}).get("max.message.bytes")
    return int(value) if value is not None and value.isdigit() else None


async def partitions_of(settings: KafkaSettings, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (empty when it does not exist)."""
    admin = _admin(settings)
    await _start(admin, settings)
    try:
        described = await admin.describe_topics([topic])
    except KafkaError as exc:
        raise PublishError(f"cannot describe {topic}: {exc!r}") from exc
    finally:
        await admin.close()
    return sorted(
        p["partition"] for t in described if t.get("error_code", 0) == 0 for p in t["partitions"]
    )
