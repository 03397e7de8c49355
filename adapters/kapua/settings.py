"""Settings of the Eclipse Kapua / Everyware Cloud adapter (section ``[kapua]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class KapuaSettings(BaseModel):
    """Per-operation notification poller. Disabled unless ``enabled = true``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
