"""`mdm-broker dev` output: a fresh cluster's expected coordinator errors are not shown as ERRORs;
the banner says which WARNING lines the demo traffic causes on purpose."""

from __future__ import annotations

import logging
from pathlib import Path

from aiokafka.errors import GroupCoordinatorNotAvailableError, GroupLoadInProgressError

from broker.devtools.dev import COORDINATOR_LOGGER, FreshClusterNoise, _banner


def _record(err: Exception) -> logging.LogRecord:
    return logging.getLogger(COORDINATOR_LOGGER).makeRecord(
        COORDINATOR_LOGGER, logging.ERROR, __file__, 1,
        "Group Coordinator Request failed: %s", (err,), None,
    )  # fmt: skip


def test_fresh_cluster_coordinator_error_is_dropped_others_kept() -> None:
    noise = FreshClusterNoise()
    assert not noise.filter(_record(GroupCoordinatorNotAvailableError()))
    assert noise.filter(_record(GroupLoadInProgressError()))


def test_banner_explains_the_deliberate_warnings_only_with_traffic(tmp_path: Path) -> None:
    endpoints = {
        "metrics_url": "http://127.0.0.1:8080/metrics",
        "broker_url": "http://127.0.0.1:8080",
        "tail_command": "mdm-broker tail -c .mdm-dev/broker.toml",
        "apple": {"webhook_url": "http://127.0.0.1:8080/apple/demo/notifications"},
        "kafka_bootstrap": "127.0.0.1:9092",
        "topic": "mdm.events",
        "kafka_security": "PLAINTEXT",
    }
    assert "Expected WARNING lines" in _banner(endpoints, tmp_path, traffic=True)
    assert "Expected WARNING lines" not in _banner(endpoints, tmp_path, traffic=False)
