"""Typed settings. Only this module reads the environment and files; everything else takes objects.

Sources, highest priority first:

1. keyword arguments (tests),
2. environment variables ``MDM_BROKER_<SECTION>__<FIELD>`` (e.g. ``MDM_BROKER_KAFKA__BOOTSTRAP_SERVERS``),
3. the TOML file given with ``--config`` (or ``MDM_BROKER_CONFIG``),
4. defaults.

Durations are float seconds named ``*_s``; sizes are bytes named ``*_bytes``. Every secret is a
``SecretStr`` (shown as ``**********`` in reprs and logs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.android.settings import AndroidSettings
from adapters.apple.settings import AppleSettings
from adapters.kapua.settings import KapuaSettings
from broker.errors import ConfigError
from broker.kafka_security import KafkaSecurity


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
    linger_s: float = Field(default=0.005, ge=0, le=1, description="Producer linger")
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


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=False, description="One JSON object per line")


class BrokerSettings(BaseSettings):
    """Every setting of ``mdm-broker run``. See docs/configuration.md for the generated reference."""

    model_config = SettingsConfigDict(
        env_prefix="MDM_BROKER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    toml_file: ClassVar[Path | None] = None

    kafka: KafkaSettings = KafkaSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    shutdown_timeout_s: float = Field(
        default=25.0,
        gt=0,
        description="Drain budget on SIGTERM; keep below Kubernetes terminationGracePeriodSeconds",
    )
    apple: AppleSettings = AppleSettings()
    android: AndroidSettings = AndroidSettings()
    kapua: KapuaSettings = KapuaSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> BrokerSettings:
    """Load settings from ``config_file`` (or ``$MDM_BROKER_CONFIG``) and the environment.

    Raises :class:`ConfigError` naming every bad setting (``section.field: problem``), so an
    operator fixes them all in one go.
    """
    path = config_file or (Path(p) if (p := os.environ.get("MDM_BROKER_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")

    class _FileSettings(BrokerSettings):
        toml_file: ClassVar[Path | None] = path

    try:
        loaded = _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source=path)) from None
    except ValueError as exc:  # pydantic-settings: malformed env JSON, TOML syntax errors
        raise ConfigError(f"invalid configuration: {exc}") from None
    return BrokerSettings.model_construct(**dict(loaded))


def describe_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line per bad setting: dotted name, what is wrong, never the (possibly secret) value."""
    where = f" in {source} or MDM_BROKER_* environment" if source else ""
    lines = [f"invalid configuration{where} ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"  {name}: {error['msg']}")
    return "\n".join(lines)
