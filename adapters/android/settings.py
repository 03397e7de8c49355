"""Settings of the Google Play EMM adapter (section ``[android]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AndroidSettings(BaseModel):
    """Long-poll puller for enterprises.pullNotificationSet. Disabled unless ``enabled = true``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
