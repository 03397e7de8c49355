"""The adapters compiled into the broker, listed explicitly (no name-built imports).

Each vendor package exposes ``build(ctx, settings) -> Adapter | None`` (None when disabled in its
settings section). This module is the one place that pairs a vendor's factory with its section of
:class:`broker.app.config.BrokerSettings`; adding a vendor is one import and one line here.
"""

from __future__ import annotations

from collections.abc import Collection

from adapters.android.adapter import build as build_android
from adapters.android.amapi_adapter import build as build_amapi
from adapters.android.replay import renormalize as android_renormalize
from adapters.apple.adapter import build as build_apple
from adapters.apple.replay import renormalizer as apple_renormalizer
from adapters.kapua.adapter import build as build_kapua
from adapters.kapua.adapter import topic_needs as kapua_topic_needs
from adapters.kapua.replay import renormalize as kapua_renormalize
from broker.adapter import Adapter, AdapterContext, AdapterFactory
from broker.app.config import BrokerSettings
from broker.dlq import Renormalizer
from broker.topics import TopicNeed


def factories(
    settings: BrokerSettings, vendors: Collection[str] | None = None
) -> list[AdapterFactory]:
    """The factories of ``vendors`` (default: every vendor) bound to their settings sections, in
    start order. Each factory still returns None when its section says ``enabled = false``."""

    def apple(ctx: AdapterContext) -> Adapter | None:
        return build_apple(ctx, settings.apple)

    def android(ctx: AdapterContext) -> Adapter | None:
        return build_android(ctx, settings.android)

    def amapi(ctx: AdapterContext) -> Adapter | None:
        return build_amapi(ctx, settings.amapi)

    def kapua(ctx: AdapterContext) -> Adapter | None:
        return build_kapua(ctx, settings.kapua)

    every = {"apple": apple, "android": android, "amapi": amapi, "kapua": kapua}
    unknown = set(vendors or ()) - every.keys()
    if unknown:
        raise ValueError(f"unknown vendor(s): {sorted(unknown)}")
    return [f for name, f in every.items() if vendors is None or name in vendors]


def topic_needs(settings: BrokerSettings, *, include_disabled: bool = False) -> list[TopicNeed]:
    """Kafka topics the enabled adapters need besides events, DLQ and state (all of them with
    ``include_disabled``): ``topics create`` creates them, start-up checks they exist."""
    return [*kapua_topic_needs(settings.kapua, include_disabled=include_disabled)]


def renormalizers(settings: BrokerSettings) -> dict[str, Renormalizer]:
    """``vendor -> Renormalizer`` for ``mdm-broker dlq replay`` (Kapua: letters that carry their
    polling context; older ones are reported not replayable)."""
    return {
        "apple": apple_renormalizer(settings.apple),
        "android": android_renormalize,
        "kapua": kapua_renormalize,
    }
