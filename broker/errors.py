"""The broker's exception tree. Every error the broker raises derives from :class:`BrokerError`.

::

    BrokerError
    ├── ConfigError                 invalid settings (start-up fails, names every bad setting)
    ├── NotStartedError             a component was used before start() or after stop()
    ├── PublishError                Kafka did not ack within the bound; retriable -> vendor is NOT acked
    │   ├── KafkaUnavailableError   Kafka is known to be unhealthy; fail fast without trying
    │   └── RecordRejectedError     Kafka can never take this record (too large, invalid): not
    │                               retriable -> the caller dead-letters the input, then acks
    ├── NormalizationError          authenticated input that cannot be parsed/normalized -> DLQ, never retried
    └── AdapterError                a vendor API call failed
        ├── VendorUnavailableError  5xx, 429, timeouts, network errors (retriable, back off)
        └── VendorAuthError         credentials rejected (not retriable without operator action)

``retriable`` tells callers whether trying the same thing again later can succeed.
Foreign exceptions (aiokafka, aiohttp) are translated at the module that calls them, with
``raise ... from exc`` so the cause stays visible.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error raised by mdm-notification-broker."""

    retriable: bool = False


class ConfigError(BrokerError):
    """The configuration is invalid. The message lists every bad setting by name."""


class NotStartedError(BrokerError):
    """A component was used before ``start()`` or after ``stop()``."""


class PublishError(BrokerError):
    """Kafka did not acknowledge every record within the configured bound.

    Some records of the batch may have been written: callers must treat the whole batch as not
    published (do not ack the vendor) and rely on redelivery plus the event id to dedupe.
    """

    retriable = True


class KafkaUnavailableError(PublishError):
    """Kafka is currently marked unhealthy; the publish was refused without waiting."""


class KafkaAccessError(PublishError):
    """Kafka refused this client's principal: authentication, TLS, or a missing ACL.

    Retrying alone does not help: the message is one line naming the cause (``cause``, a
    :class:`broker.kafka_diagnosis.ConnectCause` value, safe as a metric label) and the setting or
    ACL to fix (:func:`broker.kafka_diagnosis.access_error` builds it); it holds no secret.
    """

    def __init__(self, cause: str, summary: str) -> None:
        super().__init__(f"{cause}: {summary}")
        self.cause = cause


class RecordRejectedError(PublishError):
    """Kafka can never accept this input's records (e.g. larger than the topic allows).

    Record-fatal, not a Kafka outage: retrying the same input cannot succeed and other inputs are
    unaffected. The caller dead-letters the raw input (``reason``) and, once that write is acked,
    answers the vendor as for a stored input.
    """

    retriable = False

    def __init__(self, reason: str, detail: str = "", indices: tuple[int, ...] = ()) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.indices = indices
        """Positions (in the call's input) of the rejected records, when known; the others of
        the same call may or may not have been written (publish them again: ids dedupe)."""


class NormalizationError(BrokerError):
    """Authenticated vendor input that cannot be parsed or mapped to a canonical event.

    Poison: retrying cannot help. The raw payload goes to the dead-letter topic with ``reason``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AdapterError(BrokerError):
    """A vendor API call failed."""


class VendorUnavailableError(AdapterError):
    """The vendor answered 5xx/429, timed out, or could not be reached. Back off and retry."""

    retriable = True

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class VendorAuthError(AdapterError):
    """The vendor rejected our credentials (bad key, wrong scope, expired or revoked token)."""
