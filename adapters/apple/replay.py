"""Re-drive a dead-lettered Apple notification through the current normalizer (``dlq replay``).

The dead letter holds the webhook body as Apple sent it, the tenant (the URL's path segment) and
the receipt time; the event gets the id the first delivery would have had (``notificationId``)
and ``data.raw`` is the stored bytes, spliced in unchanged as the webhook does. (A notification
the webhook published under a collision id, ``{id}~{digest}``, is not in the DLQ.)
"""

from __future__ import annotations

import orjson

from adapters.apple.normalize import normalize
from adapters.apple.settings import AppleSettings
from broker.dlq import DeadLetter, Renormalizer
from broker.errors import NormalizationError
from broker.events import CanonicalEvent
from broker.jsonlimits import nesting_exceeds
from broker.metrics import RejectReason


def renormalizer(settings: AppleSettings) -> Renormalizer:
    """A :data:`~broker.dlq.Renormalizer` that checks the tenant's ``expected_uid`` as the
    webhook does, with the tenants configured now."""

    def renormalize(letter: DeadLetter) -> list[CanonicalEvent]:
        try:
            raw = orjson.loads(letter.payload)
        except orjson.JSONDecodeError as exc:
            raise NormalizationError(RejectReason.MALFORMED, str(exc)) from exc
        if nesting_exceeds(raw, settings.max_json_depth, letter.payload):
            raise NormalizationError(RejectReason.TOO_DEEP, "nested deeper than max_json_depth")
        tenant = settings.tenants.get(letter.tenant)
        expected_uid = tenant.expected_uid if tenant is not None else None
        return [
            normalize(
                raw,
                received_at=letter.received_at,
                expected_uid=expected_uid,
                raw_json=letter.payload,
            )
        ]

    return renormalize
