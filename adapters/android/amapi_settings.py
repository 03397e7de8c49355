"""Settings of the Android Management API source (section ``[amapi]``): a Pub/Sub pull subscription.

Independent of ``[android]`` (the Play EMM puller): an enterprise in migration runs both at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.android.pubsub import MAX_ACK_DEADLINE_S, PUBSUB_API_BASE_URL, PUBSUB_SCOPE
from broker.settings import check_http_url

_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/:]+$")


class AmapiSettings(BaseModel):
    """Pub/Sub pullers for AMAPI notifications. Disabled unless ``enabled = true``.

    Ack guarantee: a message is acknowledged only after Kafka acked every event built from it (or
    its dead letter); while it is being published its lease is extended with modifyAckDeadline;
    when publishing fails it is nacked and Pub/Sub redelivers it (same messageId, same event ids).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    subscription: str = Field(
        default="",
        description="The pull subscription of the enterprise's pubsubTopic: "
        "projects/{project}/subscriptions/{subscription}",
    )
    service_account_file: Path | None = Field(
        default=None,
        description="Service-account JSON key with roles/pubsub.subscriber on the subscription "
        "(re-read at every token fetch)",
    )
    service_account_json: SecretStr | None = Field(
        default=None, description="The key file's JSON content inline, instead of a file"
    )
    token_url: str | None = Field(
        default=None, description="OAuth token endpoint; default: the key's token_uri"
    )
    token_audience: str | None = Field(
        default=None, description="`aud` claim of the JWT assertion; default: the token URL"
    )
    api_base_url: str = Field(
        default=PUBSUB_API_BASE_URL,
        description="Pub/Sub REST base URL (point it at `mdm-broker simulate amapi` in dev)",
    )
    scope: str = Field(default=PUBSUB_SCOPE, description="OAuth scope of the access token")
    pullers: int = Field(default=4, ge=1, le=64, description="Concurrent pull requests")
    max_messages: int = Field(default=100, ge=1, le=1000, description="maxMessages per pull")
    pull_timeout_s: float = Field(
        default=90.0, gt=0, description="HTTP timeout of one pull (Pub/Sub may hold it)"
    )
    api_timeout_s: float = Field(
        default=10.0, gt=0, description="HTTP timeout of token, acknowledge, modifyAckDeadline"
    )
    ack_deadline_s: float = Field(
        default=10.0,
        gt=0,
        le=MAX_ACK_DEADLINE_S,
        description="The subscription's ackDeadlineSeconds: how long a pulled message is leased "
        "(Pub/Sub allows 10-600; the simulator also shorter ones)",
    )
    lease_extension_s: int = Field(
        default=30,
        ge=1,
        le=MAX_ACK_DEADLINE_S,
        description="Deadline asked with modifyAckDeadline while a message's publish is slow",
    )
    extend_before_s: float = Field(
        default=3.0, gt=0, description="Extend a lease this long before it runs out"
    )
    ack_margin_s: float = Field(
        default=1.0,
        ge=0,
        description="Acknowledge only while the lease has more than this left (the ack budget)",
    )
    max_lease_s: float = Field(
        default=600.0, gt=0, description="Stop extending a message's lease this long after arrival"
    )
    token_lifetime_s: int = Field(default=3600, ge=60, le=3600)
    token_refresh_margin_s: float = Field(default=300.0, ge=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    backoff_jitter: float = Field(default=0.5, ge=0, le=1)

    _urls_are_http = field_validator("token_url", "api_base_url")(check_http_url)

    @model_validator(mode="after")
    def _consistent(self) -> AmapiSettings:
        if self.enabled:
            if self.service_account_file is None and self.service_account_json is None:
                raise ValueError(
                    "amapi.enabled needs amapi.service_account_file or amapi.service_account_json"
                )
            if not _SUBSCRIPTION.match(self.subscription):
                raise ValueError(
                    "amapi.subscription must be projects/{project}/subscriptions/{subscription}"
                )
        if self.extend_before_s >= self.ack_deadline_s:
            raise ValueError("amapi.extend_before_s must be below amapi.ack_deadline_s")
        if self.ack_margin_s >= self.extend_before_s:
            raise ValueError("amapi.ack_margin_s must be below amapi.extend_before_s")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("amapi.backoff_max_s must be >= amapi.backoff_initial_s")
        return self
