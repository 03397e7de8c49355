"""Kapua error bodies (``ExceptionInfo``) mapped onto the broker's exception tree.

::

    AdapterError (broker.errors)
    ├── KapuaRequestError            4xx other than 401/404: our request is wrong (not retriable)
    │   └── KapuaNotFoundError       404 entityNotFoundExceptionInfo (e.g. operation deleted)
    ├── KapuaBadResponseError        a 2xx whose body is not JSON or violates Kapua's schema
    ├── VendorAuthError              login/refresh refused (401, 403)
    │   └── KapuaAuthError
    └── VendorUnavailableError       5xx (incl. 500 device-management timeouts), network, timeouts
        └── KapuaUnavailableError

Every error keeps the Kapua ``kapuaErrorCode`` and HTTP status so callers can log and count them.
"""

from __future__ import annotations

from typing import Any

import orjson

from broker.errors import AdapterError, VendorAuthError, VendorUnavailableError


class KapuaRequestError(AdapterError):
    """Kapua refused the request (400, 403, 409, ...). Retrying the same request cannot help."""

    def __init__(self, message: str, status: int, kapua_error_code: str | None = None) -> None:
        super().__init__(message)
        self.status: int | None = status
        self.kapua_error_code = kapua_error_code


class KapuaNotFoundError(KapuaRequestError):
    """404: the entity (device, operation, notification) does not exist (any more).

    ``info`` is the ExceptionInfo body as received ({} when empty or not JSON).
    """

    def __init__(
        self,
        message: str,
        status: int,
        kapua_error_code: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status, kapua_error_code)
        self.info: dict[str, Any] = info or {}


class KapuaBadResponseError(AdapterError):
    """Kapua (or something in between, e.g. a proxy) answered 2xx with a body that is not JSON or
    not the documented schema. Not retriable as such: the caller's loop fails, is logged, counted
    and (for a supervised task) restarted with backoff."""


class KapuaAuthError(VendorAuthError):
    """Credentials or refresh token refused (login 401, refresh 401 ExceptionInfo, 403)."""

    def __init__(
        self, message: str, status: int | None = None, kapua_error_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kapua_error_code = kapua_error_code


class KapuaUnavailableError(VendorUnavailableError):
    """5xx (e.g. a device-management timeout, mapped to 500 by Kapua), network error, timeout."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        kapua_error_code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, retry_after_s=retry_after_s)
        self.kapua_error_code = kapua_error_code


def parse_exception_info(body: bytes) -> dict[str, Any]:
    """The ExceptionInfo document of an error body, or {} when it is empty or not JSON."""
    if not body:
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def error_for_status(status: int, body: bytes, what: str) -> AdapterError:
    """Translate a non-2xx answer into the typed error; the message never includes secrets."""
    info = parse_exception_info(body)
    code = info.get("kapuaErrorCode")
    code = code if isinstance(code, str) else None
    message = info.get("message")
    text = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    if isinstance(message, str) and message:
        text += f" ({message[:200]})"
    if status == 404:
        return KapuaNotFoundError(text, status, code, info)
    if status in (401, 403):
        return KapuaAuthError(text, status, code)
    if status >= 500 or status == 429:
        return KapuaUnavailableError(text, status, code)
    return KapuaRequestError(text, status, code)
