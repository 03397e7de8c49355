"""/readyz lists recently failed one-shot tasks without turning not ready."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from broker.health import KafkaHealth
from broker.http import build_http_app
from broker.metrics import BrokerMetrics
from broker.supervisor import Supervisor


async def test_failed_one_shot_task_is_shown_but_ready() -> None:
    metrics = BrokerMetrics()
    supervisor = Supervisor(registry=metrics.registry)
    health = KafkaHealth()
    app = build_http_app(
        health=health, metrics=metrics, adapters=[], max_body_bytes=1024, supervisor=supervisor
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 200
        assert await response.json() == {"status": "ready"}
        supervisor.report_failure("kapua-poll", RuntimeError("boom"))
        response = await client.get("/readyz")
        assert response.status == 200
        body = await response.json()
        assert "RuntimeError: boom" in body["failed_tasks"]["kapua-poll"]
        health.mark_failed("probe")
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert set(body) == {"status", "problems", "failed_tasks"}


async def test_requests_are_counted_by_route_template_and_unmatched_ones_apart() -> None:
    metrics = BrokerMetrics()
    health = KafkaHealth()
    app = build_http_app(health=health, metrics=metrics, adapters=[], max_body_bytes=1024)

    def count(route: str, status: str) -> float:
        value = metrics.registry.get_sample_value(
            "mdm_broker_http_requests_total", {"route": route, "status": status}
        )
        return 0.0 if value is None else value

    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.head("/healthz")).status == 200
        health.mark_failed("probe")
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/no/such/path")).status == 404
        assert (await client.post("/healthz")).status == 405
    assert count("/healthz", "2xx") == 2
    assert count("/readyz", "5xx") == 1
    assert count("unmatched", "4xx") == 2
