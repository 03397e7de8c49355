"""Helpers of the security tests: ACL grants (CreateAcls through aiokafka), settings, waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from broker.devtools.devkafka import KafkaCluster
from broker.errors import KafkaAccessError
from broker.kafka_security import KafkaSecurity, client_kwargs
from broker.metrics import BrokerMetrics
from broker.settings import KafkaSettings
from broker.shard import StateShard
from broker.state import load_state

USERS = {
    "admin": "admin-secret-9f2",
    "mdm-broker": "broker-secret-4c1",
    "no-write": "nowrite-secret-77a",
    "rotating": "rotating-secret-v1",
}
SECRETS = tuple(USERS.values())

# Kafka's protocol codes (ResourceType, AclOperation); pattern LITERAL=3, permission ALLOW=3.
TOPIC, GROUP = 2, 3
READ, WRITE, CREATE, DESCRIBE = 3, 4, 5, 8
ALL_OPS = (READ, WRITE, CREATE, DESCRIBE)

Grant = tuple[str, int, str, int]  # principal, resource type, resource name, operation


async def grant(cluster: KafkaCluster, grants: Sequence[Grant], permission: int = 3) -> None:
    """Create ALLOW (3; DENY: 2) ACLs as the super user. aiokafka 0.14 has no create_acls
    method, so the protocol request goes through the admin client's (private) request sender."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=cluster.bootstrap_servers,
        **client_kwargs(cluster.scram_security("admin")),
    )
    await admin.start()
    try:
        for principal, resource_type, name, operation in grants:
            request = CreateAclsRequest(
                resource_type, name, 3, principal, "*", operation, permission
            )
            response = await admin._send_request(request)
            codes = [entry[0] for entry in response.creation_responses]
            assert codes == [0], (principal, name, operation, response)
    finally:
        await admin.close()


async def deny(cluster: KafkaCluster, grants: Sequence[Grant]) -> None:
    """Create DENY ACLs (they win over every ALLOW, e.g. one granted on ``*``)."""
    await grant(cluster, grants, permission=2)


def grant_sync(cluster: KafkaCluster, grants: Sequence[Grant]) -> None:
    asyncio.run(grant(cluster, grants))


def kafka_settings(
    bootstrap: str, security: KafkaSecurity, prefix: str, **overrides: Any
) -> KafkaSettings:
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security": security,
        "events_topic": f"{prefix}.events",
        "dlq_topic": f"{prefix}.events.dlq",
        "state_topic": f"{prefix}.state",
        "partitions": 2,
        "publish_timeout_s": 5.0,
        "request_timeout_s": 5.0,
        "health_probe_interval_s": 0.3,
    }
    values.update(overrides)
    return KafkaSettings(**values)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``check`` (bounded) until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


class NoOwner:
    """A StateShard owner that keeps nothing (tests of a member's connection only)."""

    async def on_loaded(self, partition: int, entries: dict[str, Any]) -> None: ...

    async def on_revoked(self, partitions: set[int]) -> None: ...

    async def on_record(self, partition: int, key: str, value: Any) -> None: ...


async def state_consumers_refused(
    kafka: KafkaSettings, group_id: str, metrics: BrokerMetrics | None = None
) -> list[KafkaAccessError]:
    """The errors of a refused first connection of a StateShard member and of load_state."""
    shard = StateShard(
        kafka, group_id=group_id, prefix="", owner=NoOwner(), client_id="t", metrics=metrics
    )
    try:
        with pytest.raises(KafkaAccessError) as member:
            await shard.start()
    finally:
        await shard.stop()
    with pytest.raises(KafkaAccessError) as loader:
        await load_state(kafka, timeout_s=30)
    return [member.value, loader.value]
