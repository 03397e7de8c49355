"""Ask Kafka whether this principal may write a topic, read a topic or join a group: no data moves.

* :func:`write_access` sends a Produce request with an EMPTY record set. Kafka checks the WRITE ACL
  before it looks at the records, so the answer is ``TOPIC_AUTHORIZATION_FAILED`` (29) when WRITE is
  denied and ``INVALID_RECORD`` (87, "exactly one record batch") when it is allowed; nothing is
  ever appended.
* :func:`read_access` fetches from partition 0 with a throwaway, group-less consumer.
* :func:`group_access` describes the group with ``include_authorized_operations`` and looks for
  READ, which joining the group needs.

Used by ``mdm-broker kafka-check`` and by the publisher's health probe after Kafka refused a
write, so /readyz turns ready again as soon as the ACL is fixed, without writing a probe record.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.types import Array, Boolean, Schema, String
from aiokafka.structs import TopicPartition

_TOPIC_AUTHORIZATION_FAILED = 29
_GROUP_AUTHORIZATION_FAILED = 30
_INVALID_RECORD = 87
_UNKNOWN_TOPIC = 3
_ACL_OPERATION_READ = 3


class _DescribeGroupsV3Struct(RequestStruct):  # type: ignore[misc]
    """DescribeGroups v3 parsed with the v3 response schema. aiokafka 0.14 pairs its v3
    request with the v2 response, which drops ``authorized_operations``."""

    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _DescribeGroupsV3(Request[_DescribeGroupsV3Struct]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, group: str) -> None:
        self._group = group

    def build(self, request_struct_class: type[_DescribeGroupsV3Struct]) -> _DescribeGroupsV3Struct:
        return request_struct_class([self._group], True)


class Access(enum.StrEnum):
    ALLOWED = "ok"
    DENIED = "DENIED"
    MISSING = "MISSING"
    UNKNOWN = "UNKNOWN"


async def write_access(client: Any, topic: str, timeout_ms: int = 5000) -> Access:
    """WRITE on ``topic`` for the principal of ``client`` (an aiokafka ``AIOKafkaClient``)."""
    request = ProduceRequest(None, -1, timeout_ms, [(topic, [(0, b"")])])
    response = await client.send(client.get_random_node(), request)
    for _topic, partitions in response.topics:
        for partition in partitions:
            code = partition[1]
            if code == _INVALID_RECORD:
                return Access.ALLOWED
            if code == _TOPIC_AUTHORIZATION_FAILED:
                return Access.DENIED
            if code == _UNKNOWN_TOPIC:
                return Access.MISSING
    return Access.UNKNOWN


async def read_access(
    bootstrap_servers: str, topic: str, kwargs: dict[str, Any], timeout_s: float = 5.0
) -> Access:
    """READ on ``topic``: one fetch from partition 0 by a consumer without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None, **kwargs
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.getmany(partition, timeout_ms=int(timeout_s * 1000), max_records=1)
    except TopicAuthorizationFailedError:
        return Access.DENIED
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
    return Access.ALLOWED


async def group_access(admin: Any, group: str, attempts: int = 10) -> Access:
    """READ on consumer group ``group`` (``admin`` is an ``AIOKafkaAdminClient``)."""
    for _ in range(attempts):
        try:
            node = await admin.find_coordinator(group)
            response = await admin._send_request(_DescribeGroupsV3(group), node)
        except GroupAuthorizationFailedError:
            return Access.DENIED
        except GroupCoordinatorNotAvailableError:  # the offsets topic is being created
            await asyncio.sleep(0.5)
            continue
        for entry in response.groups:
            error_code, operations = entry[0], entry[-1]
            if error_code == _GROUP_AUTHORIZATION_FAILED:
                return Access.DENIED
            if error_code == 0 and isinstance(operations, int) and operations >= 0:
                allowed = bool(operations >> _ACL_OPERATION_READ & 1)
                return Access.ALLOWED if allowed else Access.DENIED
        return Access.UNKNOWN
    return Access.UNKNOWN
