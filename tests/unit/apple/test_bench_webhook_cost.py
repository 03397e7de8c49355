"""bench/webhook_cost.py works (not its numbers): every stub answers the benchmark's
notifications with 200, and the in-process loop completes its requests."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.webhook_cost import TOKEN, build_app, main, notification


@pytest.mark.parametrize("stub", ["none", "store", "handler"])
async def test_every_stub_answers_200(stub: str) -> None:
    client: TestClient[Any, Any]
    async with TestClient(TestServer(build_app(stub))) as client:
        for index in range(3):
            resp = await client.post(
                "/apple/bench/notifications",
                data=notification(index),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert resp.status == 200, await resp.text()


def test_loop_mode_answers_every_request() -> None:
    threshold = gc.get_threshold()
    try:
        assert main(["loop", "64"]) == 0  # raises on any answer but 200
    finally:  # it settles the heap as the broker does: undo that for the other tests
        gc.unfreeze()
        gc.set_threshold(*threshold)
