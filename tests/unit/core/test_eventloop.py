"""The broker's commands run on uvloop when it is installed, unless told to use asyncio's loop."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from broker import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MDM_BROKER_EVENT_LOOP", raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_type()) is uvloop.Loop


def test_the_standard_loop_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDM_BROKER_EVENT_LOOP", "asyncio")
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_type()) is not uvloop.Loop
