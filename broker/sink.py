"""What adapters need of the publisher, as Protocols: tests plug in fakes, production the
:class:`broker.publisher.KafkaPublisher` (which satisfies both structurally). Adapters name these,
never the concrete publisher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from broker.events import CanonicalEvent

if TYPE_CHECKING:
    from broker.settings import KafkaSettings


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
        context: Sequence[tuple[str, str]] = (),
    ) -> None: ...


class StateSink(EventSink, Protocol):
    """An :class:`EventSink` that also writes raw records, e.g. entries of the compacted state
    topic (:class:`broker.state.StateWriter`), acked like ``publish``."""

    @property
    def settings(self) -> KafkaSettings: ...

    async def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None: ...
