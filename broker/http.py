"""The broker's aiohttp application: /healthz, /readyz, /metrics and the adapters' routes.

* ``/healthz``: 200 while the process serves requests (liveness).
* ``/readyz``: 200 when Kafka is healthy, every adapter is ready and no supervised background task
  has been down longer than ``supervisor.grace_s``, else 503 with a JSON body naming what is not
  ready (``task:<name>`` for a task; readiness: a load balancer stops sending Apple webhooks here).
  One-shot tasks that failed recently are listed under ``failed_tasks`` in either answer; they do
  not make the broker not ready (nothing is left down).
* ``/metrics``: Prometheus text format from the broker's registry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.adapter import Adapter
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics, Children
from broker.supervisor import Supervisor

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def build_http_app(
    *,
    health: KafkaHealth,
    metrics: BrokerMetrics,
    adapters: Sequence[Adapter],
    max_body_bytes: int,
    supervisor: Supervisor | None = None,
) -> web.Application:
    """Compose the HTTP application. Route metrics are labelled by route template, never path."""

    requests_by_route = Children(metrics.http_requests)

    def counted(route: web.RouteDef) -> web.RouteDef:
        """``route`` with its handler counting each answer under the route's template: a
        wrapper per route rather than an app middleware, which costs every request two more
        coroutines (aiohttp adds its own current-app middleware as soon as there is one)."""
        handler = cast(Handler, route.handler)
        template = route.path

        async def count(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                requests_by_route(template, f"{exc.status // 100}xx").inc()
                raise
            requests_by_route(template, f"{response.status // 100}xx").inc()
            return response

        return web.RouteDef(route.method, route.path, count, route.kwargs)

    async def count_unmatched(request: web.Request, response: web.StreamResponse) -> None:
        """Requests no route took (404, 405: aiohttp's router answers them) are counted as
        route ``unmatched`` when their answer is prepared."""
        if request.match_info.route.resource is None:
            requests_by_route("unmatched", f"{response.status // 100}xx").inc()

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        problems: dict[str, str] = {}
        if not health.healthy:
            problems["kafka"] = health.reason or "unhealthy"
        for adapter in adapters:
            if not adapter.ready():
                problems[adapter.name] = "not ready"
        body: dict[str, object] = {"status": "ready"}
        if supervisor is not None:
            problems.update({f"task:{n}": why for n, why in supervisor.problems().items()})
            if failed := supervisor.recent_failures():
                body["failed_tasks"] = failed
        if problems:
            body.update(status="unavailable", problems=problems)
            return json_response(body, status=503)
        return json_response(body)

    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=max_body_bytes)
    routes = [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_view),
    ]
    for adapter in adapters:
        routes += adapter.routes()
    app.add_routes([counted(route) for route in routes])
    app.on_response_prepare.append(count_unmatched)
    return app
