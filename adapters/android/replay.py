"""Re-drive a dead-lettered EMM notification through the current normalizer (``dlq replay``).

The dead letter holds one notification of a set (JSON); its event id is a digest of its content,
so the replayed event has the id the first delivery would have had.
"""

from __future__ import annotations

import orjson

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
    return [normalize_notification(raw)]
