"""`mdm-broker kafka-check` against the secured node: all green for a fully granted principal,
and exactly the missing ACLs reported (non-zero exit) for one without WRITE on the events topic.
The connection-level causes (wrong password, unknown CA, host name) are in test_refusals.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.app.cli import main
from broker.devtools.devkafka import KafkaCluster
from tests.integration.security.helpers import (
    DESCRIBE,
    GROUP,
    READ,
    SECRETS,
    TOPIC,
    USERS,
    WRITE,
    grant_sync,
)

pytestmark = [pytest.mark.kafka]


def _config(path: Path, cluster: KafkaCluster, prefix: str, user: str) -> Path:
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{cluster.bootstrap_servers}"
events_topic = "{prefix}.events"
dlq_topic = "{prefix}.events.dlq"
state_topic = "{prefix}.state"
partitions = 1
request_timeout_s = 5.0
[kafka.security]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "{user}"
sasl_password = "{USERS[user]}"
ssl_ca_file = "{cluster.pki.ca.ca_file}"
ssl_use_system_ca = false
[kapua]
enabled = true
username = "u"
password = "p"
group_id = "{prefix}-kapua"
watch_topic_enabled = false
"""
    )
    return path


def _table(capsys: pytest.CaptureFixture[str]) -> dict[tuple[str, str], str]:
    out = capsys.readouterr().out
    for secret in SECRETS:
        assert secret not in out
    rows: dict[tuple[str, str], str] = {}
    for line in out.splitlines()[1:-1]:
        check, _, rest = line.partition("  ")
        parts = [p for p in rest.strip().split("  ") if p]
        rows[(check.strip(), parts[0].strip())] = parts[1].strip()
    return rows


def test_kafka_check_passes_for_granted_principal_and_names_the_missing_write_acl(
    secure_kafka: KafkaCluster,
    tmp_path: Path,
    topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events, dlq, state = (f"{topic_prefix}.{t}" for t in ("events", "events.dlq", "state"))
    granted = _config(tmp_path / "granted.toml", secure_kafka, topic_prefix, "mdm-broker")
    assert main(["topics", "create", "--config", str(granted)]) == 0
    capsys.readouterr()

    assert main(["kafka-check", "--config", str(granted)]) == 0
    rows = _table(capsys)
    assert set(rows.values()) == {"ok"}
    assert rows[("WRITE", f"topic {events}")] == "ok"
    assert rows[("READ", f"topic {state}")] == "ok"
    assert rows[("GROUP READ", f"group {topic_prefix}-kapua")] == "ok"

    # no-write: may read everything and write DLQ and state, but not the events topic; no group.
    grant_sync(
        secure_kafka,
        [("User:no-write", TOPIC, topic, op) for topic in (dlq, state) for op in (WRITE, DESCRIBE)]
        + [("User:no-write", GROUP, f"{topic_prefix}-other", READ)],
    )
    refused = _config(tmp_path / "refused.toml", secure_kafka, topic_prefix, "no-write")
    assert main(["kafka-check", "--config", str(refused)]) == 1
    rows = _table(capsys)
    assert [v for (check, _), v in rows.items() if check == "connect + authenticate"] == ["ok"]
    assert rows[("WRITE", f"topic {events}")] == "DENIED"
    assert rows[("WRITE", f"topic {dlq}")] == "ok"
    assert rows[("WRITE", f"topic {state}")] == "ok"
    assert rows[("READ", f"topic {state}")] == "ok"
    assert rows[("DESCRIBE", f"topic {events}")] == "ok"
    assert rows[("GROUP READ", f"group {topic_prefix}-kapua")] == "DENIED"
