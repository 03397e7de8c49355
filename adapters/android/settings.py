"""Settings of the Google Play EMM adapter (section ``[android]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from broker.settings import check_http_url

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
GOOGLE_API_BASE_URL = "https://www.googleapis.com/androidenterprise/v1"
EMM_SCOPE = "https://www.googleapis.com/auth/androidenterprise"


class AndroidSettings(BaseModel):
    """Long-poll puller for enterprises.pullNotificationSet. Disabled unless ``enabled = true``.

    Ack guarantee: a notification set is acknowledged only after every one of its notifications
    was acked by Kafka, and only while less than ``ack_budget_s`` has passed since the set
    arrived; otherwise it is left unacknowledged and Google redelivers it (same event ids).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    service_account_file: Path | None = Field(
        default=None,
        description=(
            "Service-account JSON key file (Google's format: client_email, private_key, "
            "private_key_id, token_uri). Re-read at every token fetch, so a rotated key is "
            "picked up without a restart"
        ),
    )
    service_account_json: SecretStr | None = Field(
        default=None,
        description="The key file's JSON content inline (e.g. from a secret env var), instead of a file",
    )
    token_url: str | None = Field(
        default=None,
        description=f"OAuth token endpoint; default: the key's token_uri, else {GOOGLE_TOKEN_URL}",
    )
    token_audience: str | None = Field(
        default=None, description="`aud` claim of the JWT assertion; default: the token URL"
    )
    api_base_url: str = Field(
        default=GOOGLE_API_BASE_URL,
        description="Base URL of the androidenterprise v1 API (point it at the simulator in dev)",
    )
    scope: str = Field(default=EMM_SCOPE, description="OAuth scope requested for the access token")
    pullers: int = Field(
        default=4, ge=1, le=64, description="Concurrent long-polls (Google splits sets among them)"
    )
    request_mode: Literal["waitForNotifications", "returnImmediately"] = Field(
        default="waitForNotifications", description="pullNotificationSet requestMode"
    )
    pull_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="HTTP timeout of one long-poll; keep it above the server's hold time",
    )
    idle_pause_s: float = Field(
        default=1.0,
        ge=0,
        description="Pause after an empty set in returnImmediately mode (not used when waiting)",
    )
    api_timeout_s: float = Field(
        default=10.0, gt=0, description="HTTP timeout of token and acknowledge requests"
    )
    ack_budget_s: float = Field(
        default=15.0,
        gt=0,
        lt=20.0,
        description=(
            "Max seconds from a set's arrival to sending its acknowledgeNotificationSet "
            "(Google's deadline is 20 s); when exceeded the set is not acked and is redelivered"
        ),
    )
    token_lifetime_s: int = Field(
        default=3600, ge=60, le=3600, description="Requested lifetime (exp - iat) of the assertion"
    )
    token_refresh_margin_s: float = Field(
        default=300.0,
        ge=0,
        description="Fetch a new access token this long before the cached one expires",
    )
    backoff_initial_s: float = Field(
        default=1.0, gt=0, description="First retry delay after 429/5xx/network/auth errors"
    )
    backoff_max_s: float = Field(default=60.0, gt=0, description="Retry delay cap")
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    backoff_jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Delay is multiplied by a random factor in [1 - jitter, 1]",
    )

    _urls_are_http = field_validator("token_url", "api_base_url")(check_http_url)

    @model_validator(mode="after")
    def _credentials_when_enabled(self) -> AndroidSettings:
        if self.enabled and self.service_account_file is None and self.service_account_json is None:
            raise ValueError(
                "android.enabled needs android.service_account_file or android.service_account_json"
            )
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("android.backoff_max_s must be >= android.backoff_initial_s")
        return self
