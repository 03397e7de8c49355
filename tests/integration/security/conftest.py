"""ONE secured Kafka node for every security test of the session (SASL_SSL + mTLS + ACLs).

Principals: ``admin`` (super user), ``mdm-broker`` (every operation on every topic and group),
``no-write`` (DESCRIBE + READ on every topic; group READ and WRITE granted per test),
``rotating`` (like ``mdm-broker``; its password is changed by the rotation test) and the
certificate ``CN=mdm-client,O=mdm-test`` (like ``mdm-broker``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.devtools.devkafka import KafkaCluster, SecureListeners
from tests.integration.security.helpers import (
    ALL_OPS,
    GROUP,
    READ,
    TOPIC,
    USERS,
    grant_sync,
)


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(
        secure=SecureListeners(scram_users=dict(USERS), unsecured_oauthbearer=True)
    )
    with cluster:
        full = ["User:mdm-broker", "User:rotating", cluster.mtls_principal()]
        grants = [(p, TOPIC, "*", op) for p in full for op in ALL_OPS]
        grants += [(p, GROUP, "*", READ) for p in full]
        grants += [("User:no-write", TOPIC, "*", op) for op in (READ, 8)]
        grant_sync(cluster, grants)
        yield cluster
