"""Helpers of the AMAPI tests: a Pub/Sub simulator that accepts a fresh key, and settings for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.android.amapi_settings import AmapiSettings
from simulators.android.auth import AuthState
from simulators.android.pubsub_runner import PubsubSimulatorServer
from simulators.android.pubsub_server import PubsubSimConfig, PubsubSimulator
from tests.e2e.android.support import new_key_file

EMAIL = "broker@sim-project.iam.gserviceaccount.com"


def pubsub_simulator_with_key(
    key_path: Path, config: PubsubSimConfig | None = None
) -> PubsubSimulator:
    """A Pub/Sub simulator that accepts the (new) key written to ``key_path``."""
    auth = AuthState()
    auth.accounts[EMAIL] = [new_key_file(key_path, EMAIL)]
    return PubsubSimulator(config or PubsubSimConfig(hold_s=1.0, rate_limit_qps=None), auth)


def amapi_settings(
    server: PubsubSimulatorServer, key_path: Path, **overrides: Any
) -> AmapiSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "subscription": server.subscription,
        "service_account_file": key_path,
        "token_url": server.token_url,
        "api_base_url": server.api_base_url,
        "pullers": 4,
        "max_messages": 100,
        "pull_timeout_s": 10.0,
        "api_timeout_s": 3.0,
        "ack_deadline_s": float(server.simulator.config.ack_deadline_s),
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
    }
    values.update(overrides)
    return AmapiSettings(**values)
