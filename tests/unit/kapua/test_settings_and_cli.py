"""Kapua settings validation and the `mdm-broker simulate kapua` command."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import aiohttp
import pytest
from pydantic import ValidationError

from adapters.kapua.settings import KapuaSettings
from broker.devtools.devkafka import free_port


def test_exactly_one_login_method_when_enabled() -> None:
    assert KapuaSettings().enabled is False  # disabled needs no credentials
    KapuaSettings(enabled=True, api_key="k")
    KapuaSettings(enabled=True, username="u", password="p")
    with pytest.raises(ValidationError, match="exactly one"):
        KapuaSettings(enabled=True)
    with pytest.raises(ValidationError, match="exactly one"):
        KapuaSettings(enabled=True, api_key="k", username="u", password="p")
    with pytest.raises(ValidationError, match="poll_interval_max_s"):
        KapuaSettings(enabled=True, api_key="k", poll_interval_min_s=5, poll_interval_max_s=1)


def test_secrets_are_not_shown() -> None:
    settings = KapuaSettings(enabled=True, username="u", password="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


async def test_simulate_kapua_command_serves_until_sigterm() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "simulate",
        "kapua",
        "--port",
        str(port),
        "--devices",
        "4",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        summary = None
        async with aiohttp.ClientSession() as http:
            while summary is None:
                assert proc.returncode is None, "simulator exited early"
                try:
                    async with http.get(f"http://127.0.0.1:{port}/control/state") as response:
                        summary = await response.json()
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "simulator did not start within 30 s"
                    await asyncio.sleep(0.2)
        assert summary["devices"] == {"AQ": 4}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert b"kapua simulator on" in stderr
