"""How every Kafka client of the project authenticates: one settings model, one kwargs factory.

:class:`KafkaSecurity` is nested in the broker's ``KafkaSettings`` (``[kafka.security]``) and in the
consumer library's ``ConsumerSettings`` (``security``); :func:`client_kwargs` turns it into the
aiokafka keyword arguments (``security_protocol``, ``ssl_context``, ``sasl_*``) that EVERY producer,
consumer and admin client the project creates receives. Nothing else builds TLS contexts or SASL
credentials for Kafka.

This module depends only on the standard library, pydantic and aiokafka, so the consumer library
(``broker.consumer``, which may import nothing else of the broker) can use it too.

Guarantees:

* Validation names every bad or contradictory setting at once (``field: problem``), e.g. a SASL
  mechanism without credentials, TLS files with a PLAINTEXT protocol, a missing CA file.
* Secrets (``sasl_username``, ``sasl_password``, ``ssl_key_password``) are ``SecretStr``; their
  ``*_file`` twins are read when a client is created, so a rotated secret file is picked up by the
  next client without a config change. No secret is ever part of a repr, log line or error text.
* TLS verifies the broker's certificate chain and host name unless explicitly told otherwise.

OAUTHBEARER uses a token provider named by dotted path (``package.module:factory``); the factory is
called once per process with ``oauth_token_provider_options`` as keyword arguments and must return
an :class:`aiokafka.abc.AbstractTokenProvider` (``async def token() -> str``). See
:mod:`broker.kafka_oauth` for a client-credentials example.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurity(BaseModel):
    """TLS, mutual TLS and SASL settings of a Kafka client (default: PLAINTEXT, no auth)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL (TLS, optionally mutual), SASL_PLAINTEXT or SASL_SSL",
    )
    ssl_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the Kafka brokers' certificates",
    )
    ssl_use_system_ca: bool = Field(
        default=True,
        description="Also trust the system CA store (right for MSK, Confluent Cloud, Aiven). "
        "Set false to trust only ssl_ca_file",
    )
    ssl_cert_file: Path | None = Field(
        default=None,
        description="Client certificate (PEM, leaf first) for mutual TLS; needs ssl_key_file",
    )
    ssl_key_file: Path | None = Field(default=None, description="Client private key (PEM)")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted ssl_key_file"
    )
    ssl_key_password_file: Path | None = Field(
        default=None, description="File holding ssl_key_password (read at client creation)"
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description="Verify that the broker certificate names the host connected to. Keep on",
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; required with SASL_*",
    )
    sasl_username: SecretStr | None = Field(
        default=None, description="SASL user (PLAIN/SCRAM; a Confluent Cloud API key)"
    )
    sasl_username_file: Path | None = Field(
        default=None, description="File holding sasl_username (read at client creation)"
    )
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (PLAIN/SCRAM; a Confluent Cloud API secret)"
    )
    sasl_password_file: Path | None = Field(
        default=None, description="File holding sasl_password (read at client creation)"
    )
    oauth_token_provider: str | None = Field(
        default=None,
        description="OAUTHBEARER: dotted path `module:factory` returning an aiokafka "
        "AbstractTokenProvider, e.g. `broker.kafka_oauth:ClientCredentialsTokenProvider`",
    )
    oauth_token_provider_options: dict[str, str] = Field(
        default_factory=dict,
        description="Keyword arguments for the token provider factory (no secrets: use *_file "
        "options for those)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        problems = security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in _TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in _SASL_PROTOCOLS

    def describe(self) -> str:
        """Human summary without secrets, e.g. ``SASL_SSL/SCRAM-SHA-512 (CA file, mTLS)``."""
        head: str = self.security_protocol
        if self.uses_sasl and self.sasl_mechanism:
            head += f"/{self.sasl_mechanism}"
        extra = []
        if self.uses_tls:
            extra.append("CA file" if self.ssl_ca_file else "system CAs")
            if self.ssl_cert_file:
                extra.append("client certificate")
            if not self.ssl_check_hostname:
                extra.append("NO hostname check")
        return head + (f" ({', '.join(extra)})" if extra else "")


def security_problems(s: KafkaSecurity) -> list[str]:
    """Every bad or contradictory setting of ``s``, one ``field: problem`` string each."""
    problems: list[str] = []

    def either(value: object, file: Path | None, name: str, needed_for: str) -> None:
        if value is not None and file is not None:
            problems.append(f"{name} and {name}_file: give one, not both")
        elif value is None and file is None:
            problems.append(f"{name}: required for {needed_for} (or set {name}_file)")
        elif file is not None and not file.is_file():
            problems.append(f"{name}_file: not a readable file: {file}")

    tls_fields = {
        "ssl_ca_file": s.ssl_ca_file,
        "ssl_cert_file": s.ssl_cert_file,
        "ssl_key_file": s.ssl_key_file,
        "ssl_key_password": s.ssl_key_password,
        "ssl_key_password_file": s.ssl_key_password_file,
    }
    if s.uses_tls:
        for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password_file"):
            path = tls_fields[name]
            if isinstance(path, Path) and not path.is_file():
                problems.append(f"{name}: not a readable file: {path}")
        if (s.ssl_cert_file is None) != (s.ssl_key_file is None):
            problems.append("ssl_cert_file and ssl_key_file: mutual TLS needs both")
        if s.ssl_key_file is None and (s.ssl_key_password or s.ssl_key_password_file):
            problems.append("ssl_key_password: given without ssl_key_file")
        if s.ssl_key_password is not None and s.ssl_key_password_file is not None:
            problems.append("ssl_key_password and ssl_key_password_file: give one, not both")
        if not s.ssl_use_system_ca and s.ssl_ca_file is None:
            problems.append(
                "ssl_ca_file: required when ssl_use_system_ca is false (nothing would be trusted)"
            )
        if not problems:
            try:
                ssl_context(s)
            except (ssl.SSLError, OSError, ValueError) as exc:
                names = [
                    n for n in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file") if tls_fields[n]
                ]
                problems.append(f"{', '.join(names) or 'ssl'}: cannot be loaded: {exc}")
    else:
        given = [name for name, value in tls_fields.items() if value is not None]
        if given:
            problems.append(
                f"{', '.join(given)}: TLS settings given but security_protocol is "
                f"{s.security_protocol} (use SSL or SASL_SSL)"
            )

    credentials = {
        "sasl_username": s.sasl_username or s.sasl_username_file,
        "sasl_password": s.sasl_password or s.sasl_password_file,
        "oauth_token_provider": s.oauth_token_provider,
    }
    if s.uses_sasl:
        if s.sasl_mechanism is None:
            problems.append(
                f"sasl_mechanism: required with security_protocol {s.security_protocol}"
            )
        elif s.sasl_mechanism in _PASSWORD_MECHANISMS:
            either(s.sasl_username, s.sasl_username_file, "sasl_username", s.sasl_mechanism)
            either(s.sasl_password, s.sasl_password_file, "sasl_password", s.sasl_mechanism)
            if s.oauth_token_provider:
                problems.append(
                    f"oauth_token_provider: only for OAUTHBEARER, not {s.sasl_mechanism}"
                )
        else:  # OAUTHBEARER
            if not s.oauth_token_provider:
                problems.append("oauth_token_provider: required for OAUTHBEARER")
            else:
                problem = _provider_problem(s.oauth_token_provider)
                if problem:
                    problems.append(f"oauth_token_provider: {problem}")
            given = [n for n in ("sasl_username", "sasl_password") if credentials[n]]
            if given:
                problems.append(f"{', '.join(given)}: not used by OAUTHBEARER; remove")
    else:
        if s.sasl_mechanism is not None:
            problems.append(
                f"sasl_mechanism: given but security_protocol is {s.security_protocol} "
                "(use SASL_SSL or SASL_PLAINTEXT)"
            )
        given = [n for n, v in credentials.items() if v]
        if given:
            problems.append(
                f"{', '.join(given)}: SASL settings given but security_protocol is "
                f"{s.security_protocol}"
            )
    return problems


def _resolve_dotted(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"expected `module:factory`, got {path!r}")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _provider_problem(path: str) -> str | None:
    try:
        factory = _resolve_dotted(path)
    except (ImportError, AttributeError, ValueError) as exc:
        return f"cannot load {path!r}: {exc}"
    if not callable(factory):
        return f"{path!r} is not callable"
    return None


def _read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().rstrip("\r\n")
    return None


def ssl_context(s: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: broker chain verified (CA file and/or system store), host name
    checked unless ``ssl_check_hostname`` is false, client certificate loaded for mutual TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.ssl_use_system_ca:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if s.ssl_ca_file is not None:
        context.load_verify_locations(cafile=str(s.ssl_ca_file))
    context.check_hostname = s.ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if s.ssl_cert_file is not None and s.ssl_key_file is not None:
        password = _read_secret(s.ssl_key_password, s.ssl_key_password_file)
        context.load_cert_chain(str(s.ssl_cert_file), str(s.ssl_key_file), password)
    return context


_providers: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}


def token_provider(s: KafkaSecurity) -> Any:
    """The process-wide token provider instance for ``s`` (created on first use, then shared,
    so every client of the process reuses one cached token)."""
    if s.oauth_token_provider is None:
        raise ValueError("oauth_token_provider is not set")
    key = (s.oauth_token_provider, tuple(sorted(s.oauth_token_provider_options.items())))
    if key not in _providers:
        factory: Callable[..., Any] = _resolve_dotted(s.oauth_token_provider)
        _providers[key] = factory(**s.oauth_token_provider_options)
    return _providers[key]


def client_kwargs(s: KafkaSecurity) -> dict[str, Any]:
    """aiokafka keyword arguments for ``s``; pass them to every producer, consumer and admin.

    Reads ``*_file`` secrets now; raises ``OSError`` if such a file vanished since validation and
    ``ssl.SSLError`` if a key or certificate file cannot be loaded.
    """
    kwargs: dict[str, Any] = {"security_protocol": s.security_protocol}
    if s.uses_tls:
        kwargs["ssl_context"] = ssl_context(s)
    if s.uses_sasl and s.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = s.sasl_mechanism
        if s.sasl_mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = token_provider(s)
        else:
            kwargs["sasl_plain_username"] = _read_secret(s.sasl_username, s.sasl_username_file)
            kwargs["sasl_plain_password"] = _read_secret(s.sasl_password, s.sasl_password_file)
    return kwargs
