"""End-to-end Apple webhook throughput: HTTP POST -> auth -> normalize -> Kafka ack -> 2xx.

The baseline is a bare aiohttp handler on the same machine that reads the body and answers 200
with no work, driven by the same client (concurrency 32, keep-alive). The ratio says how much of
the HTTP-only ceiling the broker keeps while doing its real job; the absolute figure is compared
against a large vendor's estimated peak of 300-600 notifications/s (DESIGN.md section 5).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from pydantic import SecretStr

from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.httpserve import start_site
from broker.settings import KafkaSettings
from broker.topics import create_topics

TOKEN = "bench-token"  # noqa: S105 - a throwaway token of the benchmark's own broker
CONCURRENCY = 32


def _notification(i: int) -> bytes:
    return orjson.dumps(
        {
            "notification": {"adamId": "408709785", "countDelta": 1, "pricingParam": "STDQ"},
            "notificationId": str(uuid.uuid4()),
            "notificationType": "ASSET_COUNT",
            "uId": "2049025000431439",
        }
    )


async def _drive(url: str, bodies: list[bytes]) -> float:
    """POST every body with CONCURRENCY workers; returns 2xx responses per second."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    ok = 0
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok += resp.status < 300

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    if ok != len(bodies):
        raise RuntimeError(f"only {ok} of {len(bodies)} requests answered 2xx")
    return ok / elapsed


async def _baseline(bodies: list[bytes]) -> float:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/apple/{tenant}/notifications", handler)
    runner, _, port = await start_site(app, "127.0.0.1", 0)
    try:
        return await _drive(f"http://127.0.0.1:{port}/apple/bench/notifications", bodies)
    finally:
        await runner.cleanup()


async def _broker(bootstrap: str, bodies: list[bytes]) -> float:
    prefix = f"benchwh{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        dlq_topic=f"{prefix}.dlq",
        state_topic=f"{prefix}.state",
        partitions=6,
    )
    await create_topics(kafka)
    apple = AppleSettings(
        enabled=True,
        tenants={"bench": AppleTenantSettings(notification_auth_tokens=[SecretStr(TOKEN)])},
        reconcile_enabled=False,
    )
    settings = BrokerSettings(kafka=kafka, http={"port": 0}, apple=apple)
    app = BrokerApp(settings, factories=factories(settings, ["apple"]))
    await app.start()
    try:
        return await _drive(f"{app.base_url}/apple/bench/notifications", bodies)
    finally:
        await app.stop()


async def bench_webhook(bootstrap: str, n: int, rounds: int) -> dict[str, Any]:
    ours_runs, base_runs = [], []
    for _ in range(rounds):
        bodies = [_notification(i) for i in range(n)]
        ours_runs.append(await _broker(bootstrap, bodies))
        base_runs.append(await _baseline(bodies))
    ours, base = statistics.median(ours_runs), statistics.median(base_runs)
    return {
        "unit": "notifications/s answered 2xx (after the Kafka ack for ours)",
        "n": n,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "ours_median": round(ours),
        "baseline_median": round(base),
        "ratio": round(ours / base, 4),
        "vs_vendor_peak_600_per_s": round(ours / 600, 2),
        "baseline": "bare aiohttp handler answering 200, same client",
    }
