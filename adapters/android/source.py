"""Where notification batches come from: the pull-then-ack shape shared by EMM and Pub/Sub.

:class:`NotificationSource` is the seam the puller depends on. :class:`EmmNotificationSource`
implements it with ``enterprises.pullNotificationSet`` / ``acknowledgeNotificationSet``; a Cloud
Pub/Sub subscription (the Android Management API's delivery path: ``pull`` -> ``acknowledge`` of
ack ids) fits the same protocol, with a batch's handle being its list of ack ids.

Contract: a batch's notifications are handed out together with one ack ``handle``; nothing is
acknowledged until :meth:`NotificationSource.ack` is called with that handle. A batch that is
never acked is redelivered by the vendor (EMM: after 20 s, in a new set with a new id).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from adapters.android.api import EmmClient
from adapters.android.pubsub import PubsubClient


@dataclass(frozen=True)
class PulledBatch:
    """Raw notifications pulled together, their ack handle and when they arrived.

    ``handle`` is None for an empty batch (which must not be acked). ``arrived_at`` is a
    ``time.monotonic()`` value taken when the response was received: the ack budget counts from it.
    """

    handle: str | None
    notifications: list[Any]
    arrived_at: float = field(default_factory=time.monotonic)

    @property
    def empty(self) -> bool:
        return not self.notifications


@runtime_checkable
class NotificationSource(Protocol):
    """A pull-then-ack notification feed."""

    async def pull(self) -> PulledBatch:
        """Wait for the next batch (may return an empty one). Raises AdapterError subclasses."""
        ...

    async def ack(self, handle: str, timeout_s: float) -> None:
        """Acknowledge a batch; returns after the vendor confirmed. Raises AdapterError subclasses."""
        ...


class EmmNotificationSource:
    """The EMM API's notification sets as a :class:`NotificationSource`."""

    def __init__(self, client: EmmClient, *, request_mode: str, pull_timeout_s: float) -> None:
        self._client = client
        self._request_mode = request_mode
        self._pull_timeout_s = pull_timeout_s

    async def pull(self) -> PulledBatch:
        result = await self._client.pull_notification_set(self._request_mode, self._pull_timeout_s)
        return PulledBatch(result.set_id, result.notifications, time.monotonic())

    async def ack(self, handle: str, timeout_s: float) -> None:
        await self._client.acknowledge_notification_set(handle, timeout_s)


class PubsubNotificationSource:
    """A Cloud Pub/Sub pull subscription (AMAPI's delivery path) as a :class:`NotificationSource`.

    A batch's notifications are :class:`~adapters.android.pubsub.ReceivedMessage` objects, each
    with its own ack id; ``handle`` is the first ack id (None when the pull was empty). Beyond the
    protocol, messages are acknowledged, extended or nacked individually with
    :meth:`acknowledge` and :meth:`modify_ack_deadline`.
    """

    def __init__(self, client: PubsubClient, *, max_messages: int, pull_timeout_s: float) -> None:
        self._client = client
        self._max_messages = max_messages
        self._pull_timeout_s = pull_timeout_s

    async def pull(self) -> PulledBatch:
        messages = await self._client.pull(self._max_messages, self._pull_timeout_s)
        handle = messages[0].ack_id if messages else None
        return PulledBatch(handle, list(messages), time.monotonic())

    async def ack(self, handle: str, timeout_s: float) -> None:
        await self._client.acknowledge([handle], timeout_s)

    async def acknowledge(self, ack_ids: Sequence[str], timeout_s: float) -> None:
        await self._client.acknowledge(ack_ids, timeout_s)

    async def modify_ack_deadline(
        self, ack_ids: Sequence[str], deadline_s: int, timeout_s: float
    ) -> None:
        await self._client.modify_ack_deadline(ack_ids, deadline_s, timeout_s)
