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

from broker.settings import check_http_url

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


class AppleSyncSettings(BaseModel):
    """Recovery of what Apple gave up on: gap detection, narrow sync, safety-net sync.

    Apple tries a notification 3 times within 1-5 minutes and then drops it. Whenever this broker
    may have missed deliveries (no instance was running, or it answered non-2xx), the owner of the
    location reads what changed (Get Assignments / Get Users with ``sinceVersionId``, Get Assets)
    and publishes it as ``mdm.*.synced`` events. Locations are shared between broker instances by
    the consumer group ``group_id`` on the state topic (docs/apple.md "When notifications are
    missed").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Sync locations that have an sToken (others are skipped)"
    )
    retry_horizon_s: float = Field(
        default=360.0,
        gt=0,
        description="Apple's retry horizon: a gap is synced once its last failed answer is this "
        "old (Apple documents 3 attempts within 1-5 minutes)",
    )
    safety_net_interval_s: float = Field(
        default=21_600.0,
        ge=0,
        description="Periodic sync of every owned location even without a known gap (0 disables)",
    )
    heartbeat_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the owner records that it is alive; a location whose record is "
        "older than 2x this when loaded had no running broker (restart gap)",
    )
    initial_sync: bool = Field(
        default=True,
        description="Read (and publish) a location's whole state the first time it is seen, "
        "which also stores the first sinceVersionId",
    )
    max_parallel_pages: int = Field(
        default=5, ge=1, le=5, description="Concurrent page reads per location (Apple: <= 5)"
    )
    max_concurrent_locations: int = Field(
        default=4, ge=1, le=64, description="Locations synced at once by one instance"
    )
    retry_s: float = Field(
        default=60.0, gt=0, description="Wait before retrying a sync that failed"
    )
    group_id: str = Field(
        default="mdm-broker-apple-sync",
        min_length=1,
        description="Consumer group on the state topic; its partition assignment shards locations",
    )
    session_timeout_s: float = Field(
        default=10.0, ge=6, le=300, description="Group session timeout (how fast work moves)"
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0, le=60)
    instance_id: str | None = Field(
        default=None, description="Name of this instance in state records and logs (host-pid)"
    )


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
    sync: AppleSyncSettings = Field(default_factory=AppleSyncSettings)

    _urls_are_http = field_validator("api_base_url", "public_base_url")(check_http_url)

    @model_validator(mode="after")
    def _tenants_when_enabled(self) -> AppleSettings:
        if self.enabled and not self.tenants:
            raise ValueError("apple.enabled needs at least one entry in apple.tenants")
        return self
