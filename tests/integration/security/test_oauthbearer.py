"""OAUTHBEARER through the token-provider hook: the example client-credentials provider fetches a
token from a (local) OAuth token endpoint, and the broker publishes over SASL_SSL with it.

The node validates tokens with Kafka's unsecured validator (no signature), so the endpoint issues
unsigned JWTs whose ``sub`` (the Kafka principal) is ``mdm-broker``.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from broker.app.config import BrokerSettings
from broker.app.runtime import BrokerApp
from broker.app.tail import TailOptions, tail
from broker.devtools.devkafka import KafkaCluster
from broker.devtools.examples import example_events
from broker.events import EventType
from broker.kafka_security import KafkaSecurity
from broker.topics import create_topics
from tests.integration.security.helpers import kafka_settings

pytestmark = [pytest.mark.kafka]

CLIENT_SECRET = "oauth-client-secret-8d"


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


async def test_broker_publishes_with_oauthbearer_token_provider(
    secure_kafka: KafkaCluster, tmp_path: Path, topic_prefix: str
) -> None:
    requests: list[dict[str, str]] = []

    async def token_endpoint(request: web.Request) -> web.Response:
        form = dict(await request.post())
        requests.append({k: str(v) for k, v in form.items()})
        if form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        now = int(time.time())
        token = (
            f"{_b64({'alg': 'none'})}.{_b64({'sub': 'mdm-broker', 'iat': now, 'exp': now + 600})}."
        )
        return web.json_response({"access_token": token, "expires_in": 600})

    endpoint = web.Application()
    endpoint.router.add_post("/oauth2/token", token_endpoint)
    runner = web.AppRunner(endpoint)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        ssl_ca_file=secure_kafka.pki.ca.ca_file,
        ssl_use_system_ca=False,
        oauth_token_provider="broker.kafka_oauth:ClientCredentialsTokenProvider",
        oauth_token_provider_options={
            "token_url": f"http://127.0.0.1:{port}/oauth2/token",
            "client_id": f"{topic_prefix}-client",
            "client_secret_file": str(secret_file),
            "scope": "kafka",
        },
    )
    kafka = kafka_settings(secure_kafka.bootstrap_servers, security, topic_prefix)
    events = [
        example_events()[EventType.ASSET_COUNT_CHANGED].model_copy(update={"id": f"oauth-{i}"})
        for i in range(5)
    ]
    try:
        await create_topics(kafka)
        app = BrokerApp(
            BrokerSettings(kafka=kafka, http={"host": "127.0.0.1", "port": 0}), factories=[]
        )
        await app.start()
        try:
            assert app.health.healthy, app.health.reason
            await app.publisher.publish(events)
        finally:
            await app.stop()
        out = io.StringIO()
        printed = await tail(
            kafka,
            TailOptions(json_output=True, from_beginning=True, max_events=len(events)),
            out=out,
            err=io.StringIO(),
        )
    finally:
        await runner.cleanup()
    assert printed == len(events)
    assert all(e.id in out.getvalue() for e in events)
    # One token for every connection of the process (the provider caches it until expiry).
    assert len(requests) == 1
    assert requests[0]["grant_type"] == "client_credentials"
    assert requests[0]["scope"] == "kafka"
