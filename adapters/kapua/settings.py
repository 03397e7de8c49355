"""Settings of the Eclipse Kapua / Everyware Cloud adapter (section ``[kapua]``).

Durations are float seconds (``*_s``). Credentials are ``SecretStr``: they never appear in reprs,
logs or metric labels. Give either ``username`` + ``password`` or ``api_key``.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from broker.settings import check_http_url


class KapuaScope(BaseModel):
    """One Kapua account (scope) to discover devices and operations in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope_id: str = Field(
        default="_",
        pattern=r"^[A-Za-z0-9\-_=]+$",
        description="Kapua scope id (base64url kapuaId); `_` = the scope of the logged-in user",
    )
    device_ids: list[str] = Field(
        default_factory=list,
        description="Only watch these device entity ids (empty: every device of the scope)",
    )


class KapuaSettings(BaseModel):
    """Per-operation notification poller. Disabled unless ``enabled = true``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    base_url: str = Field(
        default="http://127.0.0.1:8081/v1",
        description="Kapua REST API root including the version segment, e.g. https://host/v1",
    )
    username: str | None = Field(default=None, description="Login with username + password")
    password: SecretStr | None = None
    api_key: SecretStr | None = Field(default=None, description="Login with an API key instead")
    instance_id: str | None = Field(
        default=None,
        description="Name of this broker instance in User-Agent and logs (default: host-pid)",
    )
    scopes: list[KapuaScope] = Field(
        default_factory=list,
        description="Scopes whose devices' operations not yet ended are watched",
    )
    watch_topic: str = Field(
        default="mdm.kapua.watch",
        description="Kafka topic of explicit watch requests {scopeId, deviceId, operationId}",
    )
    watch_topic_enabled: bool = Field(default=True, description="Consume watch_topic")
    group_id: str = Field(
        default="mdm-broker-kapua",
        description="Consumer group on the state topic; its partition assignment shards the work",
    )
    session_timeout_s: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="Group session timeout (how fast a dead peer's work moves)",
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0, le=60)
    discovery_interval_s: float = Field(
        default=60.0, gt=0, description="How often devices and their operations are listed"
    )
    closed_lookback_s: float = Field(
        default=300.0,
        ge=0,
        description=(
            "Discovery also registers operations that closed this recently (their terminal event "
            "is published once) so operations shorter than a discovery round are not missed"
        ),
    )
    poll_interval_min_s: float = Field(
        default=2.0, gt=0, description="Poll interval of an operation that just progressed"
    )
    poll_interval_max_s: float = Field(
        default=30.0, gt=0, description="Poll interval ceiling of an idle operation"
    )
    poll_rows_target: float = Field(
        default=1.5,
        gt=0,
        description=(
            "Adaptive polling: the next poll of an operation comes after its observed time "
            "between rows times this (rows expected per poll), within the interval bounds. "
            "Higher: fewer requests per event, more latency"
        ),
    )
    operation_check_interval_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Read the operation record after this long without new rows (catches STALE, unknown "
            "statuses and closes with no row change)"
        ),
    )
    terminal_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "How long a COMPLETED/FAILED row may precede the operation record's close before it "
            "is treated as the end of a phase (DEPLOY-V2 download before install)"
        ),
    )
    unknown_status_grace_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "An operation whose record shows a status the broker does not know (published once "
            "as mdm.unknown) is still watched this long, in case it moves on; then the watch ends"
        ),
    )
    page_limit: int = Field(default=50, ge=1, le=500, description="`limit` of one list request")
    resort_window: int = Field(
        default=5,
        ge=0,
        description="Rows re-read before the last known offset (device clocks may reorder sentOn)",
    )
    max_concurrent_requests: int = Field(default=16, ge=1, le=512)
    max_requests_per_s: float = Field(
        default=50.0, gt=0, description="Bound on the request rate to this Kapua endpoint"
    )
    request_timeout_s: float = Field(default=15.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries of one request on 5xx")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    token_refresh_margin_s: float = Field(
        default=300.0,
        ge=0,
        description="Refresh the access token this long before expiresOn (capped at 1/4 lifetime)",
    )
    done_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How long a closed operation is remembered (ignores late watch requests)",
    )
    watch_retry_s: float = Field(
        default=2.0, gt=0, description="Backoff after a failed watch-topic or state write"
    )

    _urls_are_http = field_validator("base_url")(check_http_url)

    @model_validator(mode="after")
    def _one_login_method(self) -> Self:
        if not self.enabled:
            return self
        has_user = self.username is not None and self.password is not None
        if has_user == (self.api_key is not None):
            raise ValueError("set either username + password or api_key (exactly one)")
        if self.poll_interval_max_s < self.poll_interval_min_s:
            raise ValueError("poll_interval_max_s must be >= poll_interval_min_s")
        return self
