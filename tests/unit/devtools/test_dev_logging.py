"""`mdm-broker dev` output: a fresh cluster's expected coordinator errors are not shown as ERRORs."""

from __future__ import annotations

import logging

from aiokafka.errors import GroupCoordinatorNotAvailableError, GroupLoadInProgressError

from broker.devtools.dev import COORDINATOR_LOGGER, FreshClusterNoise


def _record(err: Exception) -> logging.LogRecord:
    return logging.getLogger(COORDINATOR_LOGGER).makeRecord(
        COORDINATOR_LOGGER, logging.ERROR, __file__, 1,
        "Group Coordinator Request failed: %s", (err,), None,
    )  # fmt: skip


def test_fresh_cluster_coordinator_error_is_dropped_others_kept() -> None:
    noise = FreshClusterNoise()
    assert not noise.filter(_record(GroupCoordinatorNotAvailableError()))
    assert noise.filter(_record(GroupLoadInProgressError()))
