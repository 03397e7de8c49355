"""Google Play EMM adapter: long-poll puller, service-account OAuth, normalizer and simulator."""

from __future__ import annotations

from adapters.android.adapter import AndroidAdapter, build

__all__ = ["AndroidAdapter", "build"]
