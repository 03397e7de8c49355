"""Control-API pieces shared by the Google simulators (EMM and Pub/Sub): fault injection,
service-account registration and token expiry, with the same request shapes in both."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from simulators.android.auth import AuthState


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
