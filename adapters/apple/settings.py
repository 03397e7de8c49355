"""Settings of the Apple Apps and Books adapter (section ``[apple]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AppleSettings(BaseModel):
    """Apple webhook receiver and API client. Disabled unless ``enabled = true``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
