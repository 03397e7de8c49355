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

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError
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
    if unknown := unknown_environment(os.environ):
        raise ConfigError("\n".join(["invalid configuration in the environment:", *unknown]))

    class _FileSettings(BrokerSettings):
        toml_file: ClassVar[Path | None] = path

    try:
        loaded = _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source=path)) from None
    except ValueError as exc:  # pydantic-settings: malformed env JSON, TOML syntax errors
        raise ConfigError(f"invalid configuration: {exc}") from None
    return BrokerSettings.model_construct(**dict(loaded))


ENV_PREFIX = "MDM_BROKER_"
# MDM_BROKER_* variables that are not settings (read elsewhere).
OTHER_ENV_VARS = frozenset({"MDM_BROKER_CONFIG", "MDM_BROKER_CACHE_DIR", "MDM_BROKER_EVENT_LOOP"})


def env_var_name(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable that sets the setting at ``loc`` (a pydantic error location),
    e.g. ``MDM_BROKER_KAFKA__BOOTSTRAP_SERVERS``: the longest prefix of ``loc`` that names
    settings fields or keys of a dict of sections (``MDM_BROKER_APPLE__TENANTS__DEMO__...``);
    below it, a list or plain dict is given as JSON. ``None`` for the root and for a
    whole section (a check across its fields: the message names them)."""
    model: type[BaseModel] | None = BrokerSettings
    keyed: type[BaseModel] | None = None  # the value model of a dict field: next part is a key
    parts: list[str] = []
    for part in loc:
        if keyed is not None and isinstance(part, str):
            parts.append(part)
            model, keyed = keyed, None
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        parts.append(part)
        annotation = model.model_fields[part].annotation
        model = _model(annotation)
        args = get_args(annotation)
        keyed = _model(args[1]) if get_origin(annotation) is dict and len(args) == 2 else None
    if not parts or (model is not None and len(parts) == len(loc)):
        return None
    return ENV_PREFIX + "__".join(parts).upper()


def _model(annotation: object) -> type[BaseModel] | None:
    """``annotation`` when it is a settings model (a nested section), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """One line per ``MDM_BROKER_<SECTION>__<FIELD>`` variable whose section does not exist (a
    typo pydantic-settings would ignore silently; misspelt fields inside a section are already
    refused). Names without ``__`` are left alone unless they are close to a top-level setting:
    Kubernetes injects ``MDM_BROKER_SERVICE_HOST``, ``MDM_BROKER_PORT`` etc. for a Service named
    ``mdm-broker``."""
    fields = list(BrokerSettings.model_fields)
    lines = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_ENV_VARS:
            continue
        head, nested, rest = upper.removeprefix(ENV_PREFIX).partition("__")
        if head.lower() in fields:
            continue
        close = difflib.get_close_matches(head.lower(), fields, n=1, cutoff=0.75)
        if not nested and not close:
            continue
        meant = f"{ENV_PREFIX}{close[0].upper()}{nested}{rest}" if close else ""
        hint = f"; did you mean {meant}?" if close else ""
        known = ", ".join(f.upper() for f in fields)
        lines.append(f"  {key}: no setting {head.lower()!r} (known: {known}){hint}")
    return lines


def describe_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line per bad setting: dotted name (the TOML key), the environment variable that sets
    it, what is wrong; never the (possibly secret) value."""
    where = f" in {source} or MDM_BROKER_* environment" if source else ""
    lines = [f"invalid configuration{where} ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "(root)"
        env = env_var_name(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {name} (env {env}): {message}" if env else f"  {name}: {message}")
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
