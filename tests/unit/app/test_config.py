"""Settings: file + environment precedence, and start-up errors that name every bad setting."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker.app.config import load_settings
from broker.errors import ConfigError


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    """``mdm-broker run --config CONFIG`` as an operator starts it."""
    return subprocess.run(
        [sys.executable, "-m", "broker", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_defaults_are_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MDM_BROKER_CONFIG", raising=False)
    settings = load_settings()
    assert settings.kafka.events_topic == "mdm.events"
    assert settings.kafka.dlq_topic == "mdm.events.dlq"
    assert settings.http.max_body_bytes == 1_048_576


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[kafka]\nbootstrap_servers = "file:9092"\nevents_topic = "from.file"\n')
    monkeypatch.setenv("MDM_BROKER_KAFKA__BOOTSTRAP_SERVERS", "env:9093")
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "env:9093"
    assert settings.kafka.events_topic == "from.file"


def test_every_bad_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        'shutdown_timeout_s = -1\n[kafka]\nbootstrap_servers = "nohost"\npartitions = 0\n'
        "typo_field = 1\n[http]\nport = 99999\n"
    )
    monkeypatch.setenv("MDM_BROKER_LOG__LEVEL", "LOUD")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    for name in (
        "shutdown_timeout_s",
        "kafka.bootstrap_servers",
        "kafka.partitions",
        "kafka.typo_field",
        "http.port",
        "log.level",
    ):
        assert name in message
    assert "6 problem(s)" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_cli_run_with_bad_config_exits_2_naming_each_setting(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[kafka]\nbootstrap_servers = "x"\n[http]\nport = -5\n')
    proc = _run(config)
    assert proc.returncode == 2
    assert "kafka.bootstrap_servers" in proc.stderr
    assert "http.port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_each_problem_names_its_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[apple.tenants.demo]\nnotification_auth_tokens = [""]\n')
    monkeypatch.setenv("MDM_BROKER_LOG__LEVEL", "LOUD")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert "log.level (env MDM_BROKER_LOG__LEVEL): Input should be" in message
    # A dict of sections is addressed by key, as deploy/broker.toml shows.
    assert (
        "apple.tenants.demo.notification_auth_tokens "
        "(env MDM_BROKER_APPLE__TENANTS__DEMO__NOTIFICATION_AUTH_TOKENS)"
    ) in message
    assert "Value error" not in message


def test_base_urls_must_be_http_and_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDM_BROKER_APPLE__API_BASE_URL", "vpp.itunes.apple.com/mdm/v2")
    monkeypatch.setenv("MDM_BROKER_KAPUA__BASE_URL", "htps://kapua-user:hunter2@kapua/v1")
    monkeypatch.setenv("MDM_BROKER_ANDROID__TOKEN_URL", "https://")
    monkeypatch.setenv("MDM_BROKER_AMAPI__API_BASE_URL", "https://pubsub.example.com/v1")  # fine
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    for name in ("apple.api_base_url", "kapua.base_url", "android.token_url"):
        assert f"{name} (env MDM_BROKER_{name.upper().replace('.', '__')}): expected an http" in (
            message
        )
    assert "3 problem(s)" in message
    assert "hunter2" not in message


def test_misspelt_section_in_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings ignores MDM_BROKER_KAFAK__...; a typo must not silently use a default."""
    monkeypatch.setenv("MDM_BROKER_KAFAK__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("MDM_BROKER_SHUTDOWN_TIMEOUT", "10")
    # What Kubernetes injects for a Service named mdm-broker, and our non-setting variables.
    monkeypatch.setenv("MDM_BROKER_PORT", "tcp://10.0.0.7:8080")
    monkeypatch.setenv("MDM_BROKER_SERVICE_HOST", "10.0.0.7")
    monkeypatch.setenv("MDM_BROKER_PORT_8080_TCP_ADDR", "10.0.0.7")
    monkeypatch.setenv("MDM_BROKER_EVENT_LOOP", "asyncio")
    with pytest.raises(ConfigError) as info:
        load_settings()
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration in the environment:"
    assert len(lines) == 3, lines
    assert "did you mean MDM_BROKER_KAFKA__BOOTSTRAP_SERVERS?" in lines[1]
    assert "did you mean MDM_BROKER_SHUTDOWN_TIMEOUT_S?" in lines[2]


def test_cli_config_errors_are_one_message_without_secrets(tmp_path: Path) -> None:
    """Empty Apple token, missing CA file, bad URL: exit 2, each named, no traceback, no secret."""
    config = tmp_path / "bad.toml"
    config.write_text(
        '[kafka.security]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'
        'sasl_username = "svc"\nsasl_password = "kafka-pw-hunter2"\n'
        f'ssl_ca_file = "{tmp_path / "missing-ca.pem"}"\n'
        '[apple]\nenabled = true\napi_base_url = "ftp://apple"\n'
        '[apple.tenants.demo]\nnotification_auth_tokens = ["", "apple-tok-hunter2"]\n'
    )
    proc = _run(config)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr
    for name in (
        "kafka.security: ssl_ca_file: not a readable file",
        "apple.api_base_url (env MDM_BROKER_APPLE__API_BASE_URL)",
        "apple.tenants.demo.notification_auth_tokens "
        "(env MDM_BROKER_APPLE__TENANTS__DEMO__NOTIFICATION_AUTH_TOKENS)",
    ):
        assert name in proc.stderr, proc.stderr


def test_section_checks_name_their_fields_not_a_section_variable(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[apple]\nenabled = true\n[kapua]\nenabled = true\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    lines = str(info.value).splitlines()[1:]
    assert lines == [
        "  apple: apple.enabled needs at least one entry in apple.tenants",
        "  kapua: set either username + password or api_key (exactly one)",
    ]


def test_https_certificate_files_are_checked_at_start_up(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        f'tls_cert_file = "{tmp_path / "missing.pem"}"\n': "http.tls_cert_file: not a readable file",
        f'tls_cert_file = "{garbage}"\ntls_key_file = "{garbage}"\n': "cannot be loaded as a PEM",
        f'tls_key_file = "{garbage}"\n': "http.tls_key_file is set without http.tls_cert_file",
    }
    for lines, expected in cases.items():
        config = tmp_path / "https.toml"
        config.write_text("[http]\n" + lines)
        with pytest.raises(ConfigError, match=expected):
            load_settings(config)


def test_run_on_a_port_in_use_exits_2_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "broker.toml"
        config.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:1"\n[http]\nport = {port}\n')
        proc = _run(config)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mdm-broker: cannot listen on 127.0.0.1:{port} ("), last
    assert "MDM_BROKER_HTTP__PORT" in last
