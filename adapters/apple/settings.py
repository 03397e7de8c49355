"""Settings of the Apple Apps and Books adapter (section ``[apple]``).

A *tenant* is one Apple location (one sToken) as seen by this broker. Its name is the path segment
of the webhook URL ``/apple/{tenant}/notifications``. Example (TOML)::

    [apple]
    enabled = true
    public_base_url = "https://mdm.example.com"

    [apple.tenants.acme]
    notification_auth_tokens = ["new-secret", "old-secret"]   # rotation: both accepted
    expected_uid = "2049025000431439"
    s_token_file = "/run/secrets/acme.vpptoken"

Environment: ``MDM_BROKER_APPLE__TENANTS__ACME__S_TOKEN=...`` (tenant names are lower-case there).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_API_BASE_URL = "https://vpp.itunes.apple.com/mdm/v2"
DEFAULT_NOTIFICATION_TYPES = (
    "ASSET_MANAGEMENT",
    "USER_MANAGEMENT",
    "USER_ASSOCIATED",
    "ASSET_COUNT",
)


class AppleTenantSettings(BaseModel):
    """One Apple location: who may post notifications for it, and how we call Apple for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notification_auth_tokens: list[SecretStr] = Field(
        min_length=1,
        description=(
            "Accepted `Authorization: Bearer` tokens of incoming notifications. Several allow "
            "rotation without downtime; the first one is registered by `apple subscribe`"
        ),
    )
    expected_uid: str | None = Field(
        default=None,
        description="When set, notifications for another uId are refused (400 + dead letter)",
    )
    s_token: SecretStr | None = Field(
        default=None, description="The location's sToken (base64 JSON) for API calls"
    )
    s_token_file: Path | None = Field(
        default=None, description="File holding the sToken (used when s_token is not set)"
    )

    @field_validator("notification_auth_tokens")
    @classmethod
    def _tokens_not_empty(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not token.get_secret_value() for token in value):
            raise ValueError("notification auth tokens must not be empty strings")
        return value

    def load_s_token(self) -> SecretStr | None:
        """The sToken from ``s_token``, else read (stripped) from ``s_token_file``; None if unset.

        Raises :class:`OSError` when the file cannot be read.
        """
        if self.s_token is not None:
            return self.s_token
        if self.s_token_file is not None:
            return SecretStr(self.s_token_file.read_text().strip())
        return None


class AppleSettings(BaseModel):
    """Apple webhook receiver, API client and reconciliation. Disabled unless ``enabled = true``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    tenants: dict[str, AppleTenantSettings] = Field(
        default_factory=dict, description="Apple locations by tenant name (the webhook path)"
    )
    api_base_url: str = Field(
        default=DEFAULT_API_BASE_URL,
        description="Apps and Books API base (point it at `mdm-broker simulate apple` locally)",
    )
    public_base_url: str | None = Field(
        default=None,
        description="Public https base URL of this broker; `apple subscribe` registers "
        "`{public_base_url}/apple/{tenant}/notifications`",
    )
    notification_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFICATION_TYPES),
        description="Notification types `apple subscribe` registers",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger notification bodies get 413"
    )
    retry_after_s: int = Field(
        default=30, ge=1, description="Retry-After of a 503 answered while Kafka is failing"
    )
    max_json_depth: int = Field(
        default=32,
        ge=8,
        le=200,
        description="Deepest nesting of arrays/objects accepted in a notification (Apple's "
        "documented shapes need 6); deeper bodies are dead-lettered (reason too_deep)",
    )
    dedupe_window: int = Field(
        default=10_000,
        ge=0,
        description="Recently published notification ids (with a digest of their content) "
        "remembered to answer redeliveries without a second write and to detect id collisions "
        "(0 disables both; correctness never depends on it)",
    )
    dedupe_window_bytes: int = Field(
        default=8_388_608,
        ge=0,
        description="Memory bound of the dedupe window (ids are limited to 128 characters, so "
        "10,000 entries take about 4 MB)",
    )
    tracking_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens accepted by `POST /apple/{tenant}/tracked-events`; "
        "the endpoint answers 403 while this is empty",
    )
    reconcile_enabled: bool = Field(
        default=True, description="Poll event status for tracked events without notifications"
    )
    reconcile_after_s: float = Field(
        default=300.0,
        gt=0,
        description="Quiet time after registration (or the event's last notification) before "
        "event status is polled",
    )
    status_poll_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="Wait between status polls of a PENDING event (Apple asks for >= 30 s)",
    )
    api_timeout_s: float = Field(default=30.0, gt=0, description="Per HTTP request to Apple")
    api_max_attempts: int = Field(
        default=4, ge=1, le=10, description="Attempts per API call on 5xx, 9646 or network errors"
    )
    api_backoff_s: float = Field(
        default=2.0, gt=0, description="First backoff on retriable API errors (x3 each attempt)"
    )
    service_config_refresh_s: float = Field(
        default=300.0, gt=0, description="How long the service config (limits) is cached"
    )

    @model_validator(mode="after")
    def _tenants_when_enabled(self) -> AppleSettings:
        if self.enabled and not self.tenants:
            raise ValueError("apple.enabled needs at least one entry in apple.tenants")
        return self
