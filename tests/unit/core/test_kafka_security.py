"""KafkaSecurity validation names every bad setting; client_kwargs builds what aiokafka needs."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker.app.config import load_settings
from broker.errors import ConfigError
from broker.kafka_security import KafkaSecurity, client_kwargs, token_provider


class FakeProvider:
    """A token provider factory for the dotted-path hook."""

    def __init__(self, **options: str) -> None:
        self.options = options

    async def token(self) -> str:
        return "t"


def _problems(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        KafkaSecurity(**fields)
    return str(info.value)


def test_default_is_plaintext_without_tls_or_sasl() -> None:
    assert client_kwargs(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_without_mechanism_or_credentials_names_each_setting() -> None:
    text = _problems(security_protocol="SASL_SSL")
    assert "sasl_mechanism: required" in text
    text = _problems(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")
    assert "sasl_username: required for SCRAM-SHA-512" in text
    assert "sasl_password: required for SCRAM-SHA-512" in text


def test_contradictions_are_all_reported(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    text = _problems(
        security_protocol="PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_password="secret-value",
        ssl_cert_file=cert,
    )
    assert "ssl_cert_file: TLS settings given but security_protocol is PLAINTEXT" in text
    assert "sasl_mechanism: given but security_protocol is PLAINTEXT" in text
    assert "sasl_password: SASL settings given" in text
    assert "secret-value" not in text


def test_tls_files_must_exist_and_pair(tmp_path: Path) -> None:
    text = _problems(
        security_protocol="SSL",
        ssl_ca_file=tmp_path / "missing-ca.pem",
        ssl_cert_file=tmp_path / "missing.crt",
    )
    assert "ssl_ca_file: not a readable file" in text
    assert "ssl_cert_file and ssl_key_file: mutual TLS needs both" in text
    text = _problems(security_protocol="SSL", ssl_use_system_ca=False)
    assert "ssl_ca_file: required when ssl_use_system_ca is false" in text


def test_value_and_file_together_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    text = _problems(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="p",
        sasl_password_file=secret,
    )
    assert "sasl_password and sasl_password_file: give one, not both" in text


def test_oauthbearer_needs_a_loadable_provider() -> None:
    text = _problems(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER")
    assert "oauth_token_provider: required for OAUTHBEARER" in text
    text = _problems(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider="no_such_module_x:Factory",
    )
    assert "oauth_token_provider: cannot load 'no_such_module_x:Factory'" in text


def test_oauthbearer_provider_is_created_once_with_its_options() -> None:
    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider=f"{__name__}:FakeProvider",
        oauth_token_provider_options={"token_url": "https://idp.invalid/token"},
    )
    kwargs = client_kwargs(security)
    provider = kwargs["sasl_oauth_token_provider"]
    assert isinstance(provider, FakeProvider)
    assert provider.options == {"token_url": "https://idp.invalid/token"}
    assert token_provider(security) is provider
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_scram_credentials_from_files_are_read_at_client_creation(tmp_path: Path) -> None:
    user, password = tmp_path / "user", tmp_path / "password"
    user.write_text("broker\n")
    password.write_text("first\n")
    security = KafkaSecurity(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username_file=user,
        sasl_password_file=password,
    )
    assert client_kwargs(security)["sasl_plain_password"] == "first"
    password.write_text("rotated")
    kwargs = client_kwargs(security)
    assert kwargs["sasl_plain_username"] == "broker"
    assert kwargs["sasl_plain_password"] == "rotated"
    assert "ssl_context" not in kwargs
    assert "rotated" not in repr(security)


def test_tls_context_checks_hostname_by_default() -> None:
    context = client_kwargs(KafkaSecurity(security_protocol="SSL"))["ssl_context"]
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    relaxed = client_kwargs(KafkaSecurity(security_protocol="SSL", ssl_check_hostname=False))
    assert not relaxed["ssl_context"].check_hostname


def test_environment_sets_the_password_and_errors_name_the_dotted_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MDM_BROKER_KAFKA__SECURITY__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("MDM_BROKER_KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("MDM_BROKER_KAFKA__SECURITY__SASL_PASSWORD", "from-env-secret")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "kafka.security" in text
    assert "sasl_username: required for SCRAM-SHA-256" in text
    assert "from-env-secret" not in text
    monkeypatch.setenv("MDM_BROKER_KAFKA__SECURITY__SASL_USERNAME", "broker")
    settings = load_settings()
    kwargs = client_kwargs(settings.kafka.security)
    assert kwargs["sasl_plain_password"] == "from-env-secret"


def test_unloadable_tls_files_are_named(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = _problems(security_protocol="SSL", ssl_ca_file=ca)
    assert "ssl_ca_file: cannot be loaded" in text
