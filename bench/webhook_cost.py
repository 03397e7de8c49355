"""Where the webhook's CPU per request goes: the broker's HTTP app with its stages stubbed out.

Two modes, neither touching Kafka (the publisher is replaced by ``encode_event`` and an immediate
answer, so the difference to ``mdm-broker run`` in the same run is the publish path: aiokafka,
produce requests, acks and the wake-ups they cause):

* ``python -m bench.webhook_cost serve PORT --stub {none,store,handler}``: the broker's
  ``build_http_app`` with the Apple webhook, under uvloop with the broker's heap settings, for
  ``wrk`` (bench/wrk/apple.lua) beside ``mdm-broker run`` and the bare aiohttp peer. ``--stub
  handler``: the webhook route only reads the body and answers 200 (what the app itself costs
  beyond the bare peer: route wrapper, response hook, router); ``--stub store``: authentication,
  health check, body read and the JSON answer, no parse/normalize/window/encode; ``none``: the
  whole webhook. bench/README.md shows how to run them side by side.
* ``python -m bench.webhook_cost loop N``: the same app over loopback sockets with 32 keep-alive
  clients in this process, N requests, then exit: deterministic enough for
  ``valgrind --tool=callgrind`` (instructions per request = the difference of two N, divided).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.apple.webhook import AppleWebhook
from broker.app.heap import settle_after_startup
from broker.events import CanonicalEvent, encode_event
from broker.health import KafkaHealth
from broker.http import build_http_app
from broker.httpserve import start_site
from broker.metrics import BrokerMetrics

TOKEN = "bench-token"  # noqa: S105 - the benchmark's own throwaway token
CONNECTIONS = 32
_ASSIGNMENTS = ",".join(
    f'{{"adamId":"408709785","pricingParam":"STDQ","serialNumber":"C02XK1ABJG5H{i:02d}"}}'
    for i in range(1, 10)
)


class EncodeOnlyPublisher:
    """The publisher calls the webhook makes: events encoded, then answered at once."""

    async def publish(self, events: Sequence[CanonicalEvent]) -> None:
        for event in events:
            encode_event(event)

    async def dead_letter(self, payload: bytes, **_: object) -> None:
        raise AssertionError("the benchmark's notifications are all valid")


class _WebhookOnly:
    """The Apple adapter's routes as the broker registers them, around the webhook alone."""

    name = "apple"

    def __init__(self, webhook: AppleWebhook, stub: str) -> None:
        self._webhook = webhook
        self._stub = stub

    def ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def stop(self, timeout_s: float) -> None:
        return None

    def routes(self) -> list[web.RouteDef]:
        route = self._webhook.route()
        if self._stub == "handler":
            route = web.post(route.path, _read_and_answer)
        return [
            route,
            web.post("/apple/{tenant}/tracked-events", _read_and_answer),
            web.get("/apple/{tenant}/tracked-events", _read_and_answer),
        ]


async def _read_and_answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200)


def build_app(stub: str) -> web.Application:
    settings = AppleSettings(
        enabled=True,
        tenants={
            "bench": AppleTenantSettings.model_validate({"notification_auth_tokens": [TOKEN]})
        },
    )
    metrics = BrokerMetrics(CollectorRegistry())
    health = KafkaHealth()
    webhook = AppleWebhook(
        settings,
        EncodeOnlyPublisher(),
        health,
        metrics,
        on_published=lambda tenant, event: None,
        on_answer=lambda tenant, status: None,
    )
    if stub == "store":

        async def answer_only(body: bytes, tenant_name: str, tenant: object) -> web.Response:
            return web.json_response({"status": "accepted", "reason": "published", "id": "x"})

        webhook._store = answer_only  # type: ignore[method-assign]
    return build_http_app(
        health=health,
        metrics=metrics,
        adapters=[_WebhookOnly(webhook, stub)],
        max_body_bytes=1 << 20,
    )


def notification(index: int) -> bytes:
    """The ~960-byte notification of bench/wrk/apple.lua, with its own ``notificationId``."""
    return (
        f'{{"notification":{{"assignments":[{_ASSIGNMENTS}],'
        '"eventId":"954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10","result":"SUCCESS","type":"ASSOCIATE"},'
        f'"notificationId":"loop-{index:012d}","notificationType":"ASSET_MANAGEMENT",'
        '"uId":"2049025000431439"}'
    ).encode()


def _request(index: int) -> bytes:
    body = notification(index)
    head = (
        "POST /apple/bench/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, requests: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in requests:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head!r}")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()


async def _loop(count: int) -> None:
    runner, _, port = await start_site(build_app("none"), "127.0.0.1", 0)
    settle_after_startup()
    requests = [_request(i) for i in range(count)]
    try:
        await asyncio.gather(*(_client(port, requests[k::CONNECTIONS]) for k in range(CONNECTIONS)))
    finally:
        await runner.cleanup()


async def _serve(port: int, stub: str) -> None:
    runner, _, _ = await start_site(build_app(stub), "127.0.0.1", port)
    settle_after_startup()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    serve = modes.add_parser("serve")
    serve.add_argument("port", type=int)
    serve.add_argument("--stub", choices=("none", "store", "handler"), default="none")
    loop = modes.add_parser("loop")
    loop.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        uvloop.run(_serve(args.port, args.stub))
    else:
        uvloop.run(_loop(args.count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
