"""The adapters compiled into the broker, listed explicitly (no name-built imports).

Each vendor package exposes ``build(ctx) -> Adapter | None`` (None when disabled in settings).
"""

from __future__ import annotations

from adapters.android.adapter import build as build_android
from adapters.apple.adapter import build as build_apple
from adapters.base import AdapterFactory
from adapters.kapua.adapter import build as build_kapua


def factories() -> list[AdapterFactory]:
    """Every vendor adapter factory, in start order."""
    return [
        build_apple,
        build_android,
        build_kapua,
    ]
