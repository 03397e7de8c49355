"""Settings of one idempotent consumer: a frozen pydantic model, passed as one object.

Durations are float seconds named ``*_s`` and converted to aiokafka's milliseconds in
:mod:`broker.consumer.consumer` only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.kafka_security import KafkaSecurity


class ConsumerSettings(BaseModel):
    """Where to read canonical events, as which group, and how hard to retry a failing handler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list"
    )
    topic: str = Field(default="mdm.events", description="Topic of canonical events to consume")
    group_id: str = Field(
        min_length=1,
        description="Kafka consumer group; also the `group` label of the consumer metrics",
    )
    client_id: str = "mdm-broker-consumer"
    dlq_topic: str | None = Field(
        default=None,
        description="Where events go after max_attempts failures or when undecodable; "
        "default `{topic}.{group_id}.dlq`. Create it before starting the consumer.",
    )
    max_attempts: int = Field(
        default=5, ge=1, le=1000, description="Handler attempts per event before the DLQ"
    )
    retry_backoff_initial_s: float = Field(
        default=0.5, gt=0, description="Backoff before the 2nd attempt; doubles per attempt"
    )
    retry_backoff_max_s: float = Field(default=30.0, gt=0, description="Cap of the retry backoff")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a NEW group starts. `earliest` so that nothing published before the "
        "first start is missed",
    )
    max_buffered_per_partition: int = Field(
        default=5000,
        ge=1,
        description="Fetched-but-unprocessed records per partition before fetching it pauses; "
        "it resumes at half. One 1 MiB fetch holds ~1,150 events: keep several fetches, so that "
        "the half left at resume outlasts the next fetch (see fetch_max_wait_s)",
    )
    fetch_max_wait_s: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Longest time Kafka holds a fetch of partitions that have no new data. aiokafka "
        "sends one fetch per broker at a time, so a partition resumed while such a fetch is "
        "in flight waits this long for its next records (aiokafka's default: 0.5)",
    )
    max_batch_records: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most records of one partition decided together: one dedupe lookup and one "
        "store transaction per batch (handlers still run one event at a time, in order; each "
        "event is decoded when its turn comes, so a batch keeps only its records and keys "
        "alive). 500: measured no worse than 200 for the in-memory and SQLite stores and fewer "
        "round trips for PostgreSQL (docs/performance.md)",
    )
    commit_interval_s: float = Field(
        default=1.0, gt=0, description="How often processed offsets are committed (also on revoke)"
    )
    poll_timeout_s: float = Field(
        default=0.2, gt=0, le=5, description="Longest wait in one fetch; bounds reaction to stop"
    )
    revoke_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="On rebalance or stop: time given to in-flight handlers before they are "
        "abandoned (cancelled, offset not committed). Keep below session_timeout_s",
    )
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    max_poll_interval_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    dlq_publish_timeout_s: float = Field(
        default=10.0, gt=0, description="Bound on one DLQ write; then it is retried with backoff"
    )
    purge_interval_s: float = Field(
        default=600.0, gt=0, description="How often the store forgets ids older than its retention"
    )
    security: KafkaSecurity = Field(
        default_factory=KafkaSecurity,
        description="TLS, mutual TLS and SASL for the consumer and its DLQ producer: the same "
        "model as the broker's kafka.security (broker.kafka_security)",
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> ConsumerSettings:
        if self.retry_backoff_max_s < self.retry_backoff_initial_s:
            raise ValueError("retry_backoff_max_s must be >= retry_backoff_initial_s")
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError("heartbeat_interval_s must be < session_timeout_s")
        return self

    @property
    def effective_dlq_topic(self) -> str:
        """``dlq_topic`` or ``{topic}.{group_id}.dlq``."""
        return self.dlq_topic or f"{self.topic}.{self.group_id}.dlq"
