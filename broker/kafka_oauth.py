"""Example OAUTHBEARER token provider: OAuth 2.0 client credentials (RFC 6749 section 4.4).

Configure it with::

    [kafka.security]
    security_protocol = "SASL_SSL"
    sasl_mechanism = "OAUTHBEARER"
    oauth_token_provider = "broker.kafka_oauth:ClientCredentialsTokenProvider"
    [kafka.security.oauth_token_provider_options]
    token_url = "https://idp.example.com/oauth2/token"
    client_id = "mdm-broker"
    client_secret_file = "/run/secrets/kafka-oauth-client-secret"
    scope = "kafka"            # optional

The hook (see :mod:`broker.kafka_security`): any callable named by ``oauth_token_provider`` that
accepts the options as keyword arguments and returns an object with ``async def token() -> str``
(an :class:`aiokafka.abc.AbstractTokenProvider`). aiokafka calls ``token()`` for every new
connection, so a provider must cache the token and refresh it before it expires, as this one does.
For Amazon MSK IAM, write a provider that returns the signed token of ``aws-msk-iam-sasl-signer``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiokafka.abc import AbstractTokenProvider


class TokenEndpointError(Exception):
    """The token endpoint refused or answered something that is not an access token."""


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """Fetches and caches an access token; refreshes it ``refresh_margin_s`` before expiry.

    The client secret is read from ``client_secret_file`` on each refresh (so a rotated secret
    file is used at the next refresh) and never logged.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret_file: str,
        scope: str = "",
        refresh_margin_s: str = "60",
        timeout_s: str = "10",
    ) -> None:
        self._url = token_url
        self._client_id = client_id
        self._secret_file = Path(client_secret_file)
        self._scope = scope
        self._margin_s = float(refresh_margin_s)
        self._timeout_s = float(timeout_s)
        self._token = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A token valid for at least ``refresh_margin_s`` more seconds (fetched if needed)."""
        async with self._lock:
            if not self._token or time.monotonic() >= self._expires_at - self._margin_s:
                self._token, lifetime_s = await self._fetch()
                self._expires_at = time.monotonic() + lifetime_s
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret_file.read_text().strip(),
        }
        if self._scope:
            form["scope"] = self._scope
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(self._url, data=form) as response,
        ):
            if response.status != 200:
                raise TokenEndpointError(f"token endpoint answered HTTP {response.status}")
            body = await response.json(content_type=None)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenEndpointError("token endpoint answer has no access_token")
        expires_in = body.get("expires_in", 300)
        return token, float(expires_in) if isinstance(expires_in, int | float) else 300.0
