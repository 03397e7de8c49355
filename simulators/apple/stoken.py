"""Apple's side of the sToken: base64 of a JSON object ``{"token", "expDate", "orgName"}``.

The simulator mints tokens and reads back the ``token`` field of a bearer credential. The broker's
reader is ``adapters.apple.stoken``; the two are kept apart on purpose, so the simulator imports no
adapter and stays an independent oracle of the format (VENDOR_NOTES.md 1.1).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson


class STokenError(ValueError):
    """The credential is not a base64 JSON object with ``token``, ``expDate`` and ``orgName``."""


def format_apple_time(value: datetime) -> str:
    """``2030-11-08T22:33:22+0000``, the format of ``expDate`` and ``tokenExpirationDate``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


def encode_s_token(token: str, exp_date: datetime, org_name: str) -> str:
    """The sToken Apple hands out for a location."""
    doc = {"token": token, "expDate": format_apple_time(exp_date), "orgName": org_name}
    return base64.b64encode(orjson.dumps(doc)).decode()


def token_of(s_token: str) -> str:
    """The ``token`` field of a well-formed sToken; raises :class:`STokenError` when it is malformed."""
    try:
        doc = orjson.loads(base64.b64decode(s_token.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise STokenError("not base64-encoded JSON") from None
    fields = [doc.get(k) for k in ("token", "expDate", "orgName")] if isinstance(doc, dict) else []
    token, exp_date, org_name = (f if isinstance(f, str) else None for f in fields or [None] * 3)
    if token is None or exp_date is None or org_name is None:
        raise STokenError("lacks token, expDate or orgName")
    try:
        datetime.fromisoformat(exp_date)
    except ValueError:
        raise STokenError("expDate is not an ISO-8601 date") from None
    return token
