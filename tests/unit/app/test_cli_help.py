"""`mdm-broker` teaches itself: every command and option has help, exit codes are stated, and a
Kafka client error a command lets through ends as one line, not a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from broker.app.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_every_command_and_option_is_described() -> None:
    missing = []
    for name, parser in _parsers(build_parser(), "mdm-broker"):
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}: no help")
    assert not missing, "\n".join(missing)


def test_help_is_plain_text_without_rest_markup() -> None:
    marked = [
        name
        for name, parser in _parsers(build_parser(), "mdm-broker")
        if "``" in parser.format_help() or ":func:`" in parser.format_help()
    ]
    assert not marked, f"reST markup in the help of: {marked}"


def test_top_level_help_states_exit_codes() -> None:
    text = build_parser().format_help()
    assert "exit codes: 0 success; 1 runtime failure" in text
    assert "2 usage or\nconfiguration error" in text


def test_kafka_error_from_a_command_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    stoken = tmp_path / "stoken"
    stoken.write_text("not-a-real-token")
    config = tmp_path / "broker.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:1"\nrequest_timeout_s = 5\n'
        '[apple]\nenabled = true\n[apple.tenants.demo]\nnotification_auth_tokens = ["t"]\n'
        f's_token_file = "{stoken}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "broker", "apple", "sync", "-t", "demo", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mdm-broker: Kafka is unreachable: check kafka.bootstrap_servers"), last
