"""Steady mixed traffic for the local stack, driven only through the simulators' control APIs.

Used by ``mdm-broker dev`` (in-process) and by docker-compose's ``traffic`` service
(``mdm-broker dev-traffic``), so both stacks see the same load. Every tick (``interval_s``):

* Apple: a small bulk association (ASSET_MANAGEMENT, split into <=100-assignment notifications)
  and a licence purchase (ASSET_COUNT); the simulator's duplicate knob adds redeliveries;
* Google: a batch of mixed EMM notifications enqueued for the pullers;
* Kapua: new device operations that progress and then complete (every 5th fails);
* every 5th tick, two webhook posts the broker must refuse: one with a wrong token (401, nothing
  written) and one malformed body with the right token (2xx ``dead_lettered``: Apple must not retry
  a deterministic failure, see adapters/apple/webhook.py), so the reject and DLQ panels show
  something.

The loop is bounded by ``stop`` (and optionally ``max_ticks``); HTTP errors are logged, counted and
do not stop the driver (a simulator may restart under docker-compose).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from broker.signals import install_stop_signals

log = logging.getLogger(__name__)


@dataclass
class TrafficTargets:
    apple_sim_url: str | None = None
    android_sim_url: str | None = None
    amapi_sim_url: str | None = None
    kapua_sim_url: str | None = None
    broker_url: str | None = None
    apple_tenant: str = "demo"
    apple_token: str = ""


@dataclass
class TrafficStats:
    ticks: int = 0
    requests: int = 0
    errors: int = 0
    by_vendor: dict[str, int] = field(default_factory=dict)


class TrafficDriver:
    """Generates load until stopped. ``run`` never raises for vendor/HTTP errors."""

    def __init__(
        self, targets: TrafficTargets, interval_s: float = 2.0, max_ticks: int | None = None
    ) -> None:
        self._t = targets
        self._interval_s = interval_s
        self._max_ticks = max_ticks
        self.stats = TrafficStats()
        self._kapua_ready = False

    async def run(self, stop: asyncio.Event) -> TrafficStats:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                if self._max_ticks is not None and self.stats.ticks >= self._max_ticks:
                    break
                await self._tick(session)
                self.stats.ticks += 1
                try:
                    await asyncio.wait_for(stop.wait(), self._interval_s)
                except TimeoutError:
                    continue
        return self.stats

    async def _tick(self, session: aiohttp.ClientSession) -> None:
        t = self._t
        tick = self.stats.ticks
        if t.apple_sim_url:
            await self._post(
                session,
                "apple",
                f"{t.apple_sim_url}/_sim/bulk-associate",
                {"assets": 1, "devices": 3},
            )
            await self._post(
                session,
                "apple",
                f"{t.apple_sim_url}/_sim/assets",
                {"adamId": str(408709785 + tick % 5), "count": 1 + tick % 3},
            )
        if t.android_sim_url:
            await self._post(session, "android", f"{t.android_sim_url}/control/load", {"count": 10})
        if t.amapi_sim_url:
            await self._post(session, "amapi", f"{t.amapi_sim_url}/control/load", {"count": 10})
        if t.kapua_sim_url:
            if not self._kapua_ready:
                self._kapua_ready = await self._post(
                    session, "kapua", f"{t.kapua_sim_url}/control/devices", {"count": 10}
                )
            await self._post(
                session,
                "kapua",
                f"{t.kapua_sim_url}/control/operations",
                {"count": 2, "steps": 4, "stepIntervalS": 1.0, "failEvery": 5},
            )
        if t.broker_url and tick % 5 == 0:
            url = f"{t.broker_url}/apple/{t.apple_tenant}/notifications"
            await self._post(
                session, "reject", url, {}, headers={"Authorization": "Bearer wrong"}, expect=401
            )
            if t.apple_token:
                await self._post(
                    session,
                    "reject",
                    url,
                    None,
                    data=b'{"notificationType": "ASSET_COUNT", "truncated',
                    headers={
                        "Authorization": f"Bearer {t.apple_token}",
                        "Content-Type": "application/json",
                    },
                    expect=200,
                )

    async def _post(
        self,
        session: aiohttp.ClientSession,
        vendor: str,
        url: str,
        body: Any,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: int | None = None,
    ) -> bool:
        self.stats.requests += 1
        self.stats.by_vendor[vendor] = self.stats.by_vendor.get(vendor, 0) + 1
        try:
            kwargs: dict[str, Any] = {"headers": headers}
            if data is not None:
                kwargs["data"] = data
            else:
                kwargs["json"] = body
            async with session.post(url, **kwargs) as resp:
                await resp.read()
                ok = resp.status == expect if expect is not None else resp.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok = False
            log.warning("traffic: %s request failed: %s", vendor, type(exc).__name__)
        else:
            if not ok:
                log.warning("traffic: %s request answered %s", vendor, resp.status)
        if not ok:
            self.stats.errors += 1
        return ok


def main(argv: list[str] | None = None) -> int:
    """``mdm-broker dev-traffic``: drive the simulators of a running stack (docker-compose)."""
    parser = argparse.ArgumentParser(prog="mdm-broker dev-traffic", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apple-sim-url", default=None, help="e.g. http://apple-sim:8081")
    parser.add_argument("--android-sim-url", default=None, help="e.g. http://android-sim:8082")
    parser.add_argument("--amapi-sim-url", default=None, help="e.g. http://amapi-sim:8085")
    parser.add_argument("--kapua-sim-url", default=None, help="e.g. http://kapua-sim:8083")
    parser.add_argument("--broker-url", default=None, help="e.g. http://broker:8080")
    parser.add_argument(
        "--apple-tenant", default="demo", help="tenant of the webhook URL (default: demo)"
    )
    parser.add_argument(
        "--apple-token-env",
        default="MDM_DEV_APPLE_TOKEN",
        help="environment variable holding the tenant's notification token (for the DLQ sample)",
    )
    parser.add_argument(
        "--interval-s", type=float, default=2.0, help="seconds between ticks (default: 2)"
    )
    parser.add_argument("--max-ticks", type=int, default=None, help="stop after N ticks")


def run_from_args(args: argparse.Namespace) -> int:
    import os

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    targets = TrafficTargets(
        apple_sim_url=args.apple_sim_url,
        android_sim_url=args.android_sim_url,
        amapi_sim_url=args.amapi_sim_url,
        kapua_sim_url=args.kapua_sim_url,
        broker_url=args.broker_url,
        apple_tenant=args.apple_tenant,
        apple_token=os.environ.get(args.apple_token_env, ""),
    )

    async def go() -> TrafficStats:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop)
        return await TrafficDriver(targets, args.interval_s, args.max_ticks).run(stop)

    stats = asyncio.run(go())
    print(f"traffic: {stats.ticks} ticks, {stats.requests} requests, {stats.errors} errors")
    return 0
