"""Classify a failed Kafka write: what it means for the input, the producer and cluster health.

Three classes, each with one consequence (DESIGN.md section 4):

``TRANSIENT``
    The cluster could not take the write now (broker down, leader change, not enough replicas,
    network error). The caller does not ack its vendor; the vendor redelivers. Kafka health is
    marked failed until a later ack or the metadata probe succeeds.
``RECORD_FATAL``
    Kafka can never take this record (too large, invalid, cannot be serialized). The caller
    dead-letters the input (:class:`~broker.errors.RecordRejectedError`). Health is untouched:
    one record's fate says nothing about the cluster.
``PRODUCER_FATAL``
    The producer's idempotent session is broken (``OutOfOrderSequenceNumber``, fenced, unknown
    producer id): every later write to the same partition would fail the same way. The producer
    is recreated before the next write; the failed call is retriable. Health is untouched.

A broker-side record rejection *also* breaks the idempotent session (the rejected batch used
sequence numbers the broker never accepted), so the publisher recreates its producer after it
as well; see :func:`breaks_session`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiokafka import errors as ke


class Failure(enum.Enum):
    TRANSIENT = "transient"
    RECORD_FATAL = "record_fatal"
    PRODUCER_FATAL = "producer_fatal"


class RecordRejectReason(enum.StrEnum):
    """``reason`` of a :class:`~broker.errors.RecordRejectedError` (also a DLQ reason)."""

    RECORD_TOO_LARGE = "record_too_large"
    INVALID_RECORD = "invalid_record"
    SERIALIZATION = "serialization"


@dataclass(frozen=True)
class Classified:
    failure: Failure
    reason: str
    """Short, fixed-set label: a RecordRejectReason, the aiokafka error class name or ``timeout``."""


_TOO_LARGE: tuple[type[BaseException], ...] = (
    ke.MessageSizeTooLargeError,
    ke.RecordListTooLargeError,
    ke.RecordTooLargeError,
)
_INVALID: tuple[type[BaseException], ...] = (
    ke.CorruptRecordException,
    ke.InvalidMessageError,
    ke.InvalidTimestampError,
    ke.UnsupportedForMessageFormatError,
)
_SESSION_BROKEN: tuple[type[BaseException], ...] = (
    ke.OutOfOrderSequenceNumber,
    ke.ProducerFenced,
    ke.InvalidProducerEpoch,
    ke.UnknownProducerId,
    ke.InvalidProducerIdMapping,
    ke.IllegalStateError,
    ke.ProducerClosed,
)


def classify(exc: BaseException) -> Classified:
    """Map an exception from a Kafka write (aiokafka, socket, our own bound) to its class."""
    if isinstance(exc, _TOO_LARGE):
        return Classified(Failure.RECORD_FATAL, RecordRejectReason.RECORD_TOO_LARGE.value)
    if isinstance(exc, _INVALID):
        return Classified(Failure.RECORD_FATAL, RecordRejectReason.INVALID_RECORD.value)
    if isinstance(exc, _SESSION_BROKEN):
        return Classified(Failure.PRODUCER_FATAL, type(exc).__name__)
    if isinstance(exc, TimeoutError | ke.KafkaTimeoutError | ke.RequestTimedOutError):
        return Classified(Failure.TRANSIENT, "timeout")
    if isinstance(exc, OSError | ke.KafkaConnectionError):
        return Classified(Failure.TRANSIENT, type(exc).__name__)
    if isinstance(exc, ke.KafkaError) and exc.retriable:
        return Classified(Failure.TRANSIENT, type(exc).__name__)
    # Anything else (an unknown error code, "Unexpected error during batch delivery"): we cannot
    # tell whether the session survived, so treat it as broken. Recreating is cheap; a stuck
    # session outliving one error is what issue 10 found.
    return Classified(Failure.PRODUCER_FATAL, type(exc).__name__)


def breaks_session(classified: Classified, *, reached_broker: bool) -> bool:
    """Whether the producer must be recreated before its next write.

    Producer-fatal errors always do. A record-fatal error does when the broker rejected the batch
    (``reached_broker``): aiokafka had already assigned it sequence numbers. A record refused on
    the client side (size pre-check, serializer) never got a sequence number and does not.
    An ambiguous timeout (records in flight, outcome unknown) does as well, see the publisher.
    """
    if classified.failure is Failure.PRODUCER_FATAL:
        return True
    return classified.failure is Failure.RECORD_FATAL and reached_broker
