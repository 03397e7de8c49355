"""The core's settings models: Kafka, the HTTP server, logging. Vendor settings live in each
adapter (``adapters/<vendor>/settings.py``); :mod:`broker.app.config` assembles them all into
``BrokerSettings`` and is the only module that reads the environment and files.

Durations are float seconds named ``*_s``; sizes are bytes named ``*_bytes``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.kafka_security import KafkaSecurity


def check_http_url(value: str | None) -> str | None:
    """A settings validator for base URLs: ``http://`` or ``https://`` with a host, else
    ``ValueError`` (so a typo fails at start-up, not at the first request). ``None`` passes.
    The message does not repeat the value: a URL may carry credentials."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host, e.g. https://host/path")
    return value


class KafkaSettings(BaseModel):
    """Where and how events are written. The producer always uses acks=all and idempotence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list"
    )
    client_id: str = "mdm-notification-broker"
    events_topic: str = Field(default="mdm.events", description="Canonical events")
    dlq_topic: str = Field(
        default="mdm.events.dlq", description="Authenticated but unparseable input"
    )
    state_topic: str = Field(
        default="mdm.broker.state", description="Compacted broker state (cursors, tracked work)"
    )
    partitions: int = Field(default=12, ge=1, description="Partitions for `topics create`")
    replication_factor: int = Field(default=1, ge=1, description="For `topics create`")
    linger_s: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Producer linger: how long a record may wait for others to share its Kafka "
        "request. 0 (measured, docs/performance.md): aiokafka keeps one request in flight per "
        "partition, so under load records batch while the previous request is out (~15 per "
        "request at 32 concurrent webhooks, as with 1 ms); at 4 concurrent webhooks 1 ms doubled "
        "the median answer time (5.3 vs 2.5 ms) and cost more CPU per request",
    )
    max_batch_bytes: int = Field(default=262_144, ge=1024, description="Producer batch size")
    max_request_bytes: int = Field(default=4_194_304, ge=1024)
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"
    publish_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Upper bound on waiting for Kafka acks of one publish() call; then PublishError",
    )
    request_timeout_s: float = Field(default=15.0, gt=0)
    health_probe_interval_s: float = Field(default=2.0, gt=0)
    security: KafkaSecurity = Field(
        default_factory=KafkaSecurity,
        description="TLS, mutual TLS and SASL for every Kafka client (see docs/operations.md)",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts_have_ports(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {part.strip()!r}")
        return value


class HttpSettings(BaseModel):
    """The broker's HTTP server: /healthz, /readyz, /metrics and push adapters' routes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger bodies get 413")
    tls_cert_file: Path | None = Field(default=None, description="PEM; enables HTTPS with key")
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files_load(self) -> HttpSettings:
        """A missing or unloadable certificate or key fails at start-up naming the setting."""
        if self.tls_cert_file is None:
            if self.tls_key_file is not None:
                raise ValueError("http.tls_key_file is set without http.tls_cert_file")
            return self
        for name, path in (
            ("tls_cert_file", self.tls_cert_file),
            ("tls_key_file", self.tls_key_file),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"http.{name}: not a readable file: {path}")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self.tls_cert_file, self.tls_key_file
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                "http.tls_cert_file / http.tls_key_file: cannot be loaded as a PEM certificate "
                f"chain and its private key ({exc})"
            ) from None
        return self


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=False, description="One JSON object per line")
