"""Apple's side of the sToken: base64 of a JSON object ``{"token", "expDate", "orgName"}``.

The simulator mints and checks tokens here; ``adapters.apple.stoken`` is the broker's reader, kept
separate on purpose so the simulator imports no adapter and stays an independent oracle.

``expDate`` is ISO-8601 like ``2030-11-08T22:33:22+0000`` (VENDOR_NOTES.md 1.1). The simulator
mints tokens with :func:`encode_s_token`; the CLI reads the expiry with :func:`decode_s_token`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

APPLE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


class STokenError(ValueError):
    """The string is not a base64 JSON sToken with ``token``, ``expDate`` and ``orgName``."""


@dataclass(frozen=True)
class STokenInfo:
    token: str
    exp_date: datetime
    org_name: str

    def __repr__(self) -> str:  # never show the token itself
        return f"STokenInfo(org_name={self.org_name!r}, exp_date={self.exp_date.isoformat()})"


def format_apple_time(value: datetime) -> str:
    """``2030-11-08T22:33:22+0000``, the format of ``expDate`` and ``tokenExpirationDate``."""
    return value.astimezone(UTC).strftime(APPLE_TIME_FORMAT)


def parse_apple_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, APPLE_TIME_FORMAT)
    except ValueError:
        return datetime.fromisoformat(value)


def encode_s_token(token: str, exp_date: datetime, org_name: str) -> str:
    doc = {"token": token, "expDate": format_apple_time(exp_date), "orgName": org_name}
    return base64.b64encode(orjson.dumps(doc)).decode()


def decode_s_token(value: str) -> STokenInfo:
    """Parse an sToken; raises :class:`STokenError` (the message never contains the token)."""
    try:
        doc = orjson.loads(base64.b64decode(value.strip(), validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise STokenError("sToken is not base64-encoded JSON") from None
    if not isinstance(doc, dict):
        raise STokenError("sToken JSON is not an object")
    token, exp, org = doc.get("token"), doc.get("expDate"), doc.get("orgName")
    if not isinstance(token, str) or not isinstance(exp, str) or not isinstance(org, str):
        raise STokenError("sToken lacks token, expDate or orgName")
    try:
        exp_date = parse_apple_time(exp)
    except ValueError:
        raise STokenError("sToken expDate is not an ISO-8601 date") from None
    return STokenInfo(token=token, exp_date=exp_date, org_name=org)
