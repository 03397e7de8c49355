"""Errors of the idempotent consumer. All derive from :class:`broker.errors.BrokerError`.

::

    BrokerError
    └── ConsumerError          the consumer cannot go on (a partition worker crashed, not started)
        ├── StoreError         the dedupe store failed (retriable: the record is retried, not counted
        │                      as a handler attempt, and its offset is not committed)
        └── RejectEvent        raised BY A HANDLER: this event can never succeed; it goes to the
                               dead-letter topic at once, without further attempts
"""

from __future__ import annotations

from broker.errors import BrokerError


class ConsumerError(BrokerError):
    """The consumer stopped because it cannot go on safely; the message says why."""


class StoreError(ConsumerError):
    """The dedupe store could not be read or written. Retrying later can succeed."""

    retriable = True


class RejectEvent(ConsumerError):
    """Raise from a handler for an event that no retry can fix (e.g. it violates a business rule).

    The consumer dead-letters the record at once with reason ``rejected`` and ``detail`` in the
    ``dlq-detail`` header, then goes on with the partition. Nothing is recorded as processed, so
    re-publishing the record later (after a fix) handles it again.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
