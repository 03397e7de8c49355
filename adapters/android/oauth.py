"""Service-account OAuth 2.0 for the EMM API: RS256 JWT assertion -> jwt-bearer token grant.

Flow (Google's two-legged service-account flow): sign a JWT with the service account's private
key (claims ``iss`` = client_email, ``scope``, ``aud`` = token URL, ``iat``, ``exp`` at most one
hour later), POST it to the token endpoint as
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`` and use the returned
``access_token`` as ``Authorization: Bearer``.

Guarantees of :class:`TokenProvider`:

* One cached access token per provider; it is replaced ``token_refresh_margin_s`` before it
  expires, and at once after :meth:`TokenProvider.invalidate` (the API answered 401).
* Concurrent callers share one fetch (single flight).
* Failures are typed: :class:`VendorAuthError` when the key or the grant is rejected (bad key,
  wrong scope, expired assertion: operator action needed), :class:`VendorUnavailableError` for
  429/5xx/network (retry later). Messages name the cause; they never contain the key or a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import jwt
import orjson
from pydantic import SecretStr

from adapters.android.settings import GOOGLE_TOKEN_URL
from broker.errors import VendorAuthError, VendorUnavailableError
from broker.retry import parse_retry_after

log = logging.getLogger(__name__)

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class OAuthSettings(Protocol):
    """The settings a service-account token needs (``[android]`` EMM and ``[amapi]`` both fit)."""

    @property
    def service_account_file(self) -> Path | None: ...
    @property
    def service_account_json(self) -> SecretStr | None: ...
    @property
    def token_url(self) -> str | None: ...
    @property
    def token_audience(self) -> str | None: ...
    @property
    def scope(self) -> str: ...
    @property
    def token_lifetime_s(self) -> int: ...
    @property
    def token_refresh_margin_s(self) -> float: ...
    @property
    def api_timeout_s(self) -> float: ...


@dataclass(frozen=True)
class ServiceAccountKey:
    """The parts of a Google service-account JSON key the broker uses."""

    client_email: str
    private_key: str = field(repr=False)
    private_key_id: str | None = None
    token_uri: str | None = None


def parse_service_account(content: bytes, origin: str) -> ServiceAccountKey:
    """Parse a key file's content; raises :class:`VendorAuthError` naming what is wrong."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise VendorAuthError(f"service account key {origin} is not JSON") from None
    if not isinstance(doc, dict):
        raise VendorAuthError(f"service account key {origin} is not a JSON object")
    missing = [k for k in ("client_email", "private_key") if not isinstance(doc.get(k), str)]
    if missing:
        raise VendorAuthError(f"service account key {origin} lacks {', '.join(missing)}")
    key_id = doc.get("private_key_id")
    token_uri = doc.get("token_uri")
    return ServiceAccountKey(
        client_email=doc["client_email"],
        private_key=doc["private_key"],
        private_key_id=key_id if isinstance(key_id, str) else None,
        token_uri=token_uri if isinstance(token_uri, str) else None,
    )


def load_service_account(settings: OAuthSettings) -> ServiceAccountKey:
    """Read the key from ``service_account_json`` or ``service_account_file`` (fresh each call)."""
    if settings.service_account_json is not None:
        return parse_service_account(
            settings.service_account_json.get_secret_value().encode(), "(inline json)"
        )
    path: Path | None = settings.service_account_file
    if path is None:
        raise VendorAuthError("no service account key configured")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise VendorAuthError(
            f"cannot read service account key {path}: {exc.strerror or exc}"
        ) from None
    return parse_service_account(content, str(path))


def build_assertion(
    key: ServiceAccountKey, *, scope: str, audience: str, now: float, lifetime_s: int
) -> str:
    """The RS256-signed JWT assertion for the jwt-bearer grant."""
    claims = {
        "iss": key.client_email,
        "scope": scope,
        "aud": audience,
        "iat": int(now),
        "exp": int(now) + lifetime_s,
    }
    headers = {"kid": key.private_key_id} if key.private_key_id else None
    try:
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=headers)
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # cryptography raises ValueError for an unparseable PEM; never echo the key itself.
        raise VendorAuthError(
            f"service account private key is unusable for RS256 ({type(exc).__name__})"
        ) from None


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: float  # time.monotonic() deadline
    refresh_at: float  # time.monotonic() after which a new token is fetched


def _describe_token_error(status: int, body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP {status}"
    if isinstance(doc, dict):
        error = doc.get("error")
        description = doc.get("error_description")
        if isinstance(error, str):
            return f"HTTP {status} {error}" + (f": {description}" if description else "")
    return f"HTTP {status}"


class TokenProvider:
    """Cached access token for one service account, refreshed ahead of expiry."""

    def __init__(
        self,
        settings: OAuthSettings,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (wall time) stamps the JWT assertion; ``monotonic`` times the token's life."""
        self._settings = settings
        self._session = session
        self._clock = clock
        self._monotonic = monotonic
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        """Drop the cached token (the API rejected it); the next :meth:`get` fetches a new one."""
        self._token = None

    async def get(self) -> str:
        """A valid access token; fetches one when none is cached or it expires soon."""
        token = self._token
        if token is not None and not self._needs_refresh(token):
            return token.value
        async with self._lock:
            token = self._token
            if token is None or self._needs_refresh(token):
                token = await self._fetch()
                self._token = token
            return token.value

    def _needs_refresh(self, token: AccessToken) -> bool:
        return self._monotonic() >= token.refresh_at

    async def _fetch(self) -> AccessToken:
        s = self._settings
        key = load_service_account(s)
        token_url = s.token_url or key.token_uri or GOOGLE_TOKEN_URL
        assertion = build_assertion(
            key,
            scope=s.scope,
            audience=s.token_audience or token_url,
            now=self._clock(),
            lifetime_s=s.token_lifetime_s,
        )
        started = self._monotonic()
        try:
            async with self._session.post(
                token_url,
                data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
                timeout=aiohttp.ClientTimeout(total=s.api_timeout_s),
            ) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise VendorUnavailableError(
                f"token endpoint unreachable: {type(exc).__name__}"
            ) from exc
        if status == 429 or status >= 500:
            raise VendorUnavailableError(
                f"token endpoint: {_describe_token_error(status, body)}",
                status=status,
                retry_after_s=parse_retry_after(retry_after),
            )
        if status != 200:
            raise VendorAuthError(
                f"token endpoint rejected the service-account assertion for {key.client_email} "
                f"(scope {s.scope}): {_describe_token_error(status, body)}"
            )
        try:
            doc = orjson.loads(body)
            value = doc["access_token"]
            expires_in = float(doc.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise VendorUnavailableError("token endpoint answered 200 without a token") from None
        if not isinstance(value, str) or not value:
            raise VendorUnavailableError("token endpoint answered 200 without a token")
        self.fetches += 1
        log.info(
            "android: access token obtained for %s (expires in %.0fs)", key.client_email, expires_in
        )
        # Refresh ahead of expiry; a short-lived token is refreshed at half its lifetime at the latest.
        margin = min(s.token_refresh_margin_s, expires_in / 2)
        return AccessToken(
            value=value, expires_at=started + expires_in, refresh_at=started + expires_in - margin
        )
