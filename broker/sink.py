"""What adapters need of the publisher, as a Protocol: tests plug in fakes, production the
:class:`broker.publisher.KafkaPublisher` (which satisfies it structurally).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from broker.events import CanonicalEvent


class EventSink(Protocol):
    """Both methods return only after Kafka acknowledged, else raise ``PublishError``."""

    async def publish(self, events: Sequence[CanonicalEvent]) -> None: ...

    async def dead_letter(
        self,
        payload: bytes,
        *,
        vendor: str,
        reason: str,
        detail: str = "",
        tenant: str = "",
        content_type: str = "application/octet-stream",
    ) -> None: ...
