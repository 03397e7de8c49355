"""Fixtures of the Apple end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.apple.delivery import Faults
from simulators.apple.server import AppleSimulator, SimConfig


@pytest.fixture
async def sim() -> AsyncIterator[AppleSimulator]:
    """The Apple simulator on 127.0.0.1 with a short retry window (3 attempts within 1 s)."""
    simulator = AppleSimulator(
        SimConfig(), Faults(retry_window_s=1.0, attempt_timeout_s=10.0), seed=7
    )
    await simulator.start()
    yield simulator
    await simulator.stop()
