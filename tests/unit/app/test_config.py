"""Settings: file + environment precedence, and start-up errors that name every bad setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.app.config import load_settings
from broker.errors import ConfigError


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
    proc = subprocess.run(
        [sys.executable, "-m", "broker", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "kafka.bootstrap_servers" in proc.stderr
    assert "http.port" in proc.stderr
    assert "Traceback" not in proc.stderr
