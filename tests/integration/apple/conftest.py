"""Fixtures of the Apple integration tests (shared with the end-to-end tests)."""

from __future__ import annotations

from tests.e2e.apple.conftest import sim

__all__ = ["sim"]
