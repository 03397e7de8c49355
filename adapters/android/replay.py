"""Re-drive a dead-lettered Android notification through the current normalizer (``dlq replay``).

An EMM dead letter holds one notification of a set (JSON); its event id is a digest of its content.
An AMAPI dead letter holds the whole Pub/Sub message (``messageId``, ``data``, ``attributes``,
``publishTime``); its event ids derive from the ``messageId``. Either way the replayed events have
the ids the first delivery would have had.
"""

from __future__ import annotations

import orjson

from adapters.android.amapi_normalize import normalize_message
from adapters.android.normalize import normalize_notification
from broker.dlq import DeadLetter
from broker.errors import NormalizationError
from broker.events import CanonicalEvent
from broker.metrics import RejectReason


def renormalize(letter: DeadLetter) -> list[CanonicalEvent]:
    """The event of the dead-lettered notification; NormalizationError if it still fails."""
    try:
        raw = orjson.loads(letter.payload)
    except orjson.JSONDecodeError as exc:
        raise NormalizationError(RejectReason.MALFORMED, str(exc)) from exc
    if is_pubsub_message(raw):
        return normalize_message(raw)
    return [normalize_notification(raw)]


def is_pubsub_message(raw: object) -> bool:
    """A Pub/Sub message (AMAPI) rather than an EMM notification (which has ``enterpriseId``)."""
    return (
        isinstance(raw, dict) and "messageId" in raw and "data" in raw and "enterpriseId" not in raw
    )
