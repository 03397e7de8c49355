"""Settings (tokens, sToken from env or file) and the webhook's token checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.apple.stoken import STokenError, decode_s_token, encode_s_token
from adapters.apple.webhook import bearer_token, token_accepted
from broker.app.config import load_settings


def test_tenants_from_environment_with_several_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDM_BROKER_APPLE__ENABLED", "true")
    monkeypatch.setenv(
        "MDM_BROKER_APPLE__TENANTS", '{"acme": {"notification_auth_tokens": ["new", "old"]}}'
    )
    monkeypatch.setenv("MDM_BROKER_APPLE__TENANTS__ACME__S_TOKEN", "c3Rva2Vu")
    apple = load_settings().apple
    tenant = apple.tenants["acme"]
    assert [t.get_secret_value() for t in tenant.notification_auth_tokens] == ["new", "old"]
    assert tenant.load_s_token() == SecretStr("c3Rva2Vu")
    assert "new" not in repr(apple)
    assert "c3Rva2Vu" not in repr(apple)


def test_s_token_from_file(tmp_path: Path) -> None:
    path = tmp_path / "acme.vpptoken"
    path.write_text("  dG9rZW4=\n")
    tenant = AppleTenantSettings(notification_auth_tokens=[SecretStr("a")], s_token_file=path)
    token = tenant.load_s_token()
    assert token is not None
    assert token.get_secret_value() == "dG9rZW4="
    assert AppleTenantSettings(notification_auth_tokens=[SecretStr("a")]).load_s_token() is None


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        AppleTenantSettings(notification_auth_tokens=[])
    with pytest.raises(ValidationError):
        AppleTenantSettings(notification_auth_tokens=[SecretStr("")])
    with pytest.raises(ValidationError):
        AppleSettings(enabled=True)  # enabled without tenants
    assert not AppleSettings().enabled


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == b"abc"
    assert bearer_token("bearer  abc ") == b"abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
    assert bearer_token("") is None


def test_any_accepted_token_matches() -> None:
    accepted = [SecretStr("current"), SecretStr("previous")]
    assert token_accepted(b"current", accepted)
    assert token_accepted(b"previous", accepted)
    assert not token_accepted(b"curren", accepted)
    assert not token_accepted(b"current-and-more", accepted)
    assert not token_accepted(None, accepted)
    assert not token_accepted(b"x", [])


def test_s_token_round_trip_and_errors() -> None:
    from datetime import UTC, datetime

    token = encode_s_token("secret-part", datetime(2030, 11, 8, 22, 33, 22, tzinfo=UTC), "ORG1")
    info = decode_s_token(token)
    assert info.org_name == "ORG1"
    assert info.exp_date == datetime(2030, 11, 8, 22, 33, 22, tzinfo=UTC)
    assert "secret-part" not in repr(info)
    for bad in ("not base64!", "aGVsbG8=", "WzFd"):
        with pytest.raises(STokenError):
            decode_s_token(bad)
