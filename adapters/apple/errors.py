"""Apple's errors, under the core's tree (:mod:`broker.errors`): whether a call may be retried is
the class's ``retriable`` (``AppleUnavailableError`` yes, the others no)."""

from __future__ import annotations

from broker.errors import AdapterError, VendorAuthError, VendorUnavailableError


class AppleApiError(AdapterError):
    """Apple answered an ErrorResponse (``errorNumber``/``errorMessage``) that retrying won't fix."""

    def __init__(self, message: str, *, error_number: int | None = None, status: int | None = None):
        super().__init__(message)
        self.error_number = error_number
        self.status = status


class AppleUnavailableError(VendorUnavailableError):
    """A retriable Apple error body (9646 rate limit, 9603 internal error, or any with 5xx)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        *,
        error_number: int | None = None,
    ):
        super().__init__(message, status, retry_after_s)
        self.error_number = error_number


def error_code(exc: BaseException) -> str:
    """A metrics label for an API failure: the Apple ``errorNumber``, else the HTTP status or
    ``network``/``other`` (a fixed, small set of values)."""
    number = getattr(exc, "error_number", None)
    if isinstance(number, int):
        return str(number)
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"http_{status}"
    if isinstance(exc, VendorUnavailableError):
        return "network"
    return "other"


class AppleAuthError(VendorAuthError):
    """The sToken was refused: 9601 login required, 9621 expired, 9625 revoked, 9722 bad header."""

    def __init__(self, message: str, *, error_number: int | None = None):
        super().__init__(message)
        self.error_number = error_number
