"""Kapua access tokens: login (username/password or API key), proactive refresh, 401 re-login.

Token rules (VENDOR_NOTES 3.2): access tokens live 30 min and refresh tokens 5 h by default; a
refresh returns a new pair and invalidates the old access token even if it was still valid; an
expired or invalidated token gets HTTP 401 with an empty body.

Guarantees: :meth:`TokenManager.token` returns a token that is not within the refresh margin of
its ``expiresOn`` (margin = ``token_refresh_margin_s``, capped at a quarter of the lifetime so short
test lifetimes work). Concurrent callers share one login/refresh (single flight). After a 401 the
caller reports the token it used with :meth:`invalidate`; the next :meth:`token` logs in again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from adapters.kapua.errors import KapuaAuthError
from adapters.kapua.metrics import Endpoint, KapuaMetrics, TokenEvent
from adapters.kapua.models import AccessToken
from adapters.kapua.settings import KapuaSettings
from broker.errors import AdapterError

log = logging.getLogger(__name__)

# (endpoint, path relative to base_url, JSON body) -> decoded JSON answer (unauthenticated POST)
Poster = Callable[[Endpoint, str, dict[str, Any]], Awaitable[Any]]


class TokenManager:
    """Holds the current access token and renews it ahead of expiry."""

    def __init__(self, settings: KapuaSettings, post: Poster, metrics: KapuaMetrics) -> None:
        self._settings = settings
        self._post = post
        self._metrics = metrics
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    @property
    def current(self) -> AccessToken | None:
        return self._token

    @property
    def scope_id(self) -> str | None:
        """The scope of the logged-in user (what the `_` alias stands for)."""
        return self._token.scope_id if self._token else None

    def _margin_s(self, token: AccessToken) -> float:
        created = token.created_on or datetime.now(UTC)
        lifetime = max(0.0, (token.expires_on - created).total_seconds())
        return min(self._settings.token_refresh_margin_s, lifetime / 4)

    def _needs_renewal(self, token: AccessToken) -> bool:
        left = (token.expires_on - datetime.now(UTC)).total_seconds()
        return left <= self._margin_s(token)

    async def token(self) -> str:
        """A usable access token (``tokenId``); logs in or refreshes when needed.

        Raises :class:`KapuaAuthError` when the credentials are refused and
        :class:`~broker.errors.VendorUnavailableError` when Kapua cannot be reached.
        """
        token = self._token
        if token is not None and not self._needs_renewal(token):
            return token.token_id
        async with self._lock:
            token = self._token
            if token is not None and not self._needs_renewal(token):
                return token.token_id
            if token is not None and token.refresh_expires_on > datetime.now(UTC):
                try:
                    self._token = await self._refresh(token)
                    return self._token.token_id
                except KapuaAuthError as exc:
                    self._metrics.token(TokenEvent.REFRESH_FAILED)
                    log.warning("kapua token refresh refused (%s); logging in again", exc)
            self._token = await self._login()
            return self._token.token_id

    async def invalidate(self, used_token_id: str) -> None:
        """Forget ``used_token_id`` after Kapua answered 401 to it (no-op if already replaced)."""
        async with self._lock:
            if self._token is not None and self._token.token_id == used_token_id:
                self._token = None
                self._metrics.token(TokenEvent.RELOGIN_401)
                log.warning("kapua answered 401 to the current access token; logging in again")

    async def _login(self) -> AccessToken:
        s = self._settings
        if s.api_key is not None:
            body = {"apiKey": s.api_key.get_secret_value()}
            doc = await self._post(Endpoint.LOGIN, "authentication/apikey", body)
        elif s.username is not None and s.password is not None:
            body = {"username": s.username, "password": s.password.get_secret_value()}
            doc = await self._post(Endpoint.LOGIN, "authentication/user", body)
        else:
            raise KapuaAuthError("no Kapua credentials configured")
        token = _parse_token(doc)
        self._metrics.token(TokenEvent.LOGIN)
        log.info("kapua login ok (scope %s, token expires %s)", token.scope_id, token.expires_on)
        return token

    async def _refresh(self, old: AccessToken) -> AccessToken:
        body = {"tokenId": old.token_id, "refreshToken": old.refresh_token}
        doc = await self._post(Endpoint.REFRESH, "authentication/refresh", body)
        token = _parse_token(doc)
        self._metrics.token(TokenEvent.REFRESH)
        log.info("kapua token refreshed (expires %s)", token.expires_on)
        return token

    async def logout(self, post_with_token: Callable[[str], Awaitable[None]]) -> None:
        """Invalidate the token server-side (best effort) and forget it."""
        async with self._lock:
            token, self._token = self._token, None
        if token is None:
            return
        try:
            await post_with_token(token.token_id)
            self._metrics.token(TokenEvent.LOGOUT)
        except AdapterError as exc:
            log.info("kapua logout failed (ignored): %s", exc)


def _parse_token(doc: Any) -> AccessToken:
    try:
        return AccessToken.model_validate(doc)
    except ValueError as exc:
        raise KapuaAuthError(f"unexpected authentication answer: {type(exc).__name__}") from exc
