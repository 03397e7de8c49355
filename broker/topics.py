"""Create the broker's topics: events, dead letters, and the compacted state topic.

Idempotent: topics that already exist are left as they are (their partition count and
configuration are not changed; a warning names any mismatch in partition count).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from broker.errors import PublishError
from broker.kafka_security import client_kwargs

if TYPE_CHECKING:
    from broker.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """The three topics and their configuration, derived from settings."""
    rf = settings.replication_factor
    min_isr = "2" if rf >= 3 else "1"
    return [
        TopicSpec(settings.events_topic, settings.partitions, rf, {"min.insync.replicas": min_isr}),
        TopicSpec(settings.dlq_topic, 1, rf, {"min.insync.replicas": min_isr}),
        TopicSpec(
            settings.state_topic,
            settings.partitions,
            rf,
            {
                "cleanup.policy": "compact",
                "min.insync.replicas": min_isr,
                "min.compaction.lag.ms": "60000",
                "segment.ms": "3600000",
            },
        ),
    ]


async def create_topics(settings: KafkaSettings) -> list[str]:
    """Create missing topics; returns the names created. Raises PublishError if Kafka is down."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=int(settings.request_timeout_s * 1000),
        **client_kwargs(settings.security),
    )
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise PublishError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        for spec in topic_specs(settings):
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
    finally:
        await admin.close()
    return created
