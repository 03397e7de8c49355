"""The simulator's OAuth side: jwt-bearer token endpoint checks and access-token validation.

Checks on the assertion, in Google's order of concern, each with Google's error shape
(``{"error": ..., "error_description": ...}``, HTTP 400):

* ``grant_type`` must be the jwt-bearer URN (``unsupported_grant_type``);
* the issuer must be a known service account (``invalid_grant``: account not found);
* the RS256 signature must verify against one of that account's public keys
  (``invalid_grant``: Invalid JWT Signature);
* ``aud`` must be the token endpoint (``invalid_grant``: Failed audience check);
* ``iat``/``exp`` must be present, ``exp - iat`` at most one hour, and now within them
  (``invalid_grant``: short-lived token), using the simulator's clock (``clock_offset_s``);
* ``scope`` must include an accepted scope (``invalid_scope``).

Access tokens are opaque, expire after ``token_lifetime_s``, carry their scope and can all be
expired at once through the control API.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import jwt

from simulators.android.scopes import EMM_SCOPE

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 3600
CLOCK_LEEWAY_S = 60


class TokenRequestError(Exception):
    """A token request Google would refuse: ``error`` and ``error_description`` as on the wire."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class _Token:
    client_email: str
    scopes: frozenset[str]
    expires_at: float  # simulator clock (time.time() + clock_offset_s)


@dataclass
class AuthState:
    """Service accounts (email -> public keys PEM), accepted scopes and issued tokens."""

    accounts: dict[str, list[str]] = field(default_factory=dict)
    accepted_scopes: set[str] = field(default_factory=lambda: {EMM_SCOPE})
    audience: str | None = None
    token_lifetime_s: int = 3600
    clock_offset_s: float = 0.0
    tokens_issued: int = 0
    token_errors: int = 0
    _tokens: dict[str, _Token] = field(default_factory=dict)

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def issue(
        self, grant_type: str | None, assertion: str | None, endpoint_url: str
    ) -> dict[str, object]:
        """Validate a token request; returns the token response or raises TokenRequestError."""
        try:
            return self._issue(grant_type, assertion, endpoint_url)
        except TokenRequestError:
            self.token_errors += 1
            raise

    def _issue(
        self, grant_type: str | None, assertion: str | None, endpoint_url: str
    ) -> dict[str, object]:
        if grant_type != JWT_BEARER_GRANT:
            raise TokenRequestError(
                "unsupported_grant_type", "Invalid grant_type: " + str(grant_type)
            )
        if not assertion:
            raise TokenRequestError("invalid_request", "Missing required parameter: assertion")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise TokenRequestError("invalid_grant", "Invalid JWT: malformed assertion") from None
        if header.get("alg") != "RS256":
            raise TokenRequestError("invalid_grant", "Invalid JWT: alg must be RS256")
        issuer = unverified.get("iss")
        keys = self.accounts.get(issuer) if isinstance(issuer, str) else None
        if not keys:
            raise TokenRequestError("invalid_grant", "Invalid grant: account not found")
        claims = None
        for pem in keys:
            try:
                claims = jwt.decode(
                    assertion,
                    pem,
                    algorithms=["RS256"],
                    options={"verify_exp": False, "verify_iat": False, "verify_aud": False},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise TokenRequestError(
                    "invalid_grant", "Invalid JWT: malformed assertion"
                ) from None
        if claims is None:
            raise TokenRequestError("invalid_grant", "Invalid JWT Signature.")
        expected_aud = self.audience or endpoint_url
        aud = claims.get("aud")
        if aud != expected_aud and not (isinstance(aud, list) and expected_aud in aud):
            raise TokenRequestError("invalid_grant", "Invalid JWT: Failed audience check.")
        iat, exp = claims.get("iat"), claims.get("exp")
        now = self.now()
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp - iat > MAX_ASSERTION_LIFETIME_S
            or iat > now + CLOCK_LEEWAY_S
            or exp < now - CLOCK_LEEWAY_S
        ):
            raise TokenRequestError(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        scope = claims.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        if not scopes or not scopes & self.accepted_scopes:
            raise TokenRequestError(
                "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        value = "ya29.sim-" + secrets.token_urlsafe(32)
        self._tokens[value] = _Token(str(issuer), scopes, now + self.token_lifetime_s)
        self.tokens_issued += 1
        return {"access_token": value, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}

    def check(self, authorization: str | None, required_scope: str) -> str | None:
        """None when the bearer token is valid for ``required_scope``, else ``"401"``/``"403"``."""
        if not authorization or not authorization.startswith("Bearer "):
            return "401"
        token = self._tokens.get(authorization.removeprefix("Bearer ").strip())
        if token is None or token.expires_at <= self.now():
            return "401"
        if required_scope not in token.scopes:
            return "403"
        return None

    def expire_all(self) -> int:
        """Make every issued token expired (the next API call with one answers 401)."""
        for token in self._tokens.values():
            token.expires_at = 0.0
        return len(self._tokens)
