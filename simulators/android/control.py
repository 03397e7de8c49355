"""Control-API pieces shared by the Google simulators (EMM and Pub/Sub): fault injection,
service-account registration and token expiry, with the same request shapes in both; and the
checks and endpoints both simulators answer alike (ack mode, injected faults, the 429 limiter,
``POST /token``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson
from aiohttp import web

from simulators.android.auth import AuthState, TokenRequestError


@dataclass
class TokenBucket:
    """``rate_per_s`` requests a second with one second of burst: the simulators' 429 limiter."""

    rate_per_s: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        capacity = max(1.0, self.rate_per_s)
        self.tokens = min(capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Fault:
    operation: str  # a simulator's operation name (pull, ack, token, ...) or "any"
    status: int | str  # HTTP status or "network"
    remaining: int


async def read_control_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``); 400 otherwise."""
    try:
        doc = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return doc


class FaultsAndAccounts:
    """``POST /control/faults``, ``/control/accounts``, ``/control/tokens/expire``."""

    faults: list[Fault]
    auth: AuthState

    def _fault(self, operation: str) -> int | str | None:
        """The injected failure for this call, if one is pending (consumes it)."""
        for fault in self.faults:
            if fault.remaining > 0 and fault.operation in (operation, "any"):
                fault.remaining -= 1
                return fault.status
        return None

    async def control_faults(self, request: web.Request) -> web.StreamResponse:
        doc = await read_control_json(request)
        status = doc.get("status", 503)
        if status != "network" and not (isinstance(status, int) and 400 <= status <= 599):
            raise web.HTTPBadRequest(text="status must be an HTTP error status or 'network'")
        self.faults.append(
            Fault(str(doc.get("operation", "any")), status, int(doc.get("count", 1)))
        )
        return web.json_response({"faults": len(self.faults)})

    async def control_accounts(self, request: web.Request) -> web.StreamResponse:
        doc = await read_control_json(request)
        email, pem = doc.get("client_email"), doc.get("public_key_pem")
        if not isinstance(email, str) or not isinstance(pem, str):
            raise web.HTTPBadRequest(text="client_email and public_key_pem are required")
        self.auth.accounts[email] = [pem]
        return web.json_response({"accounts": len(self.auth.accounts)})

    async def control_expire_tokens(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"expired": self.auth.expire_all()})


class AckModeConfig(Protocol):
    ack_mode: str  # normal | blackhole


C = TypeVar("C", bound=AckModeConfig)


class GoogleSimulator(FaultsAndAccounts, Generic[C]):
    """What the EMM and Pub/Sub simulators share beyond the control API: ``config.ack_mode``
    with its held acks, injected faults as responses, the token-bucket limiter and the OAuth
    token endpoint. Subclasses set the attributes below in ``__init__``."""

    config: C
    rate_limited: int
    _bucket: TokenBucket | None
    _release_blackhole: asyncio.Event

    def set_ack_mode(self, mode: str) -> None:
        """``normal`` or ``blackhole``; leaving blackhole refuses (never applies) the held acks."""
        if mode not in ("normal", "blackhole"):
            raise ValueError("ack_mode must be normal or blackhole")
        self.config.ack_mode = mode
        if mode == "blackhole":
            self._release_blackhole.clear()
        else:
            self._release_blackhole.set()

    def _injected_fault(
        self,
        request: web.Request,
        operation: str,
        api_error: Callable[[int, str], web.Response],
    ) -> web.StreamResponse | None:
        """The response of a pending injected fault for ``operation`` (consumes it), else None:
        a dropped connection, an OAuth error body for ``token``, else ``api_error``."""
        status = self._fault(operation)
        if status is None:
            return None
        if status == "network":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        code = int(status)
        if operation == "token":
            return web.json_response(
                {"error": "internal_failure", "error_description": "injected fault"}, status=code
            )
        return api_error(code, "Injected fault")

    def _over_rate(self, rate_per_s: float | None) -> bool:
        """True (and counted) when this call is above ``rate_per_s`` (None: no limit)."""
        if rate_per_s is None:
            return False
        if self._bucket is None or self._bucket.rate_per_s != rate_per_s:
            self._bucket = TokenBucket(rate_per_s, max(1.0, rate_per_s))
        if self._bucket.take():
            return False
        self.rate_limited += 1
        return True

    async def _issue_token(
        self, request: web.Request, log: logging.Logger, refused: str
    ) -> web.StreamResponse:
        """``POST /token`` past the fault check: a jwt-bearer grant, or Google's OAuth error
        (logged as ``refused % exc`` on ``log``)."""
        form = await request.post()
        grant_type, assertion = form.get("grant_type"), form.get("assertion")
        try:
            doc = self.auth.issue(
                grant_type if isinstance(grant_type, str) else None,
                assertion if isinstance(assertion, str) else None,
                str(request.url.with_query(None)),
            )
        except TokenRequestError as exc:
            log.info(refused, exc)
            return web.json_response(
                {"error": exc.error, "error_description": exc.description}, status=exc.status
            )
        return web.json_response(doc)
