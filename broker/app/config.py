"""Typed settings of the whole broker, assembled from the core's and each adapter's sections.

Only this module reads the environment and files; everything else takes objects.

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
from typing import Any, ClassVar

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.android.amapi_settings import AmapiSettings
from adapters.android.settings import AndroidSettings
from adapters.apple.settings import AppleSettings
from adapters.kapua.settings import KapuaSettings
from broker.errors import ConfigError
from broker.settings import HttpSettings, KafkaSettings, LogSettings
from broker.supervisor import SupervisorSettings


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
    amapi: AmapiSettings = AmapiSettings()
    kapua: KapuaSettings = KapuaSettings()
    supervisor: SupervisorSettings = SupervisorSettings()

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


def load_apple_settings(config_file: Path | None = None) -> AppleSettings:
    """The ``apple`` section of :func:`load_settings` (what ``mdm-broker apple ...`` needs)."""
    return load_settings(config_file).apple


def load_android_settings(config_file: Path | None = None) -> AndroidSettings:
    """The ``android`` section of :func:`load_settings` (what ``mdm-broker android ...`` needs)."""
    return load_settings(config_file).android


def load_amapi_settings(config_file: Path | None = None) -> AmapiSettings:
    """The ``amapi`` section of :func:`load_settings` (``mdm-broker android check`` checks it)."""
    return load_settings(config_file).amapi
