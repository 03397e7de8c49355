"""The broker's Apple routes over real HTTP(S) and Kafka: HTTPS delivery and event tracking."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from adapters.apple.settings import AppleTenantSettings
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    TENANT,
    TRACKING_TOKEN,
    apple_settings,
    events_of,
    read_until,
    running_broker,
    subscribe,
)

pytestmark = pytest.mark.kafka


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_webhook_receives_the_test_notification(
    broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    sim = AppleSimulator(notify_ssl=trust)
    sim.config.require_https = True
    await sim.start()
    try:
        settings = BrokerSettings(
            kafka=broker_settings.kafka,
            http={"host": "127.0.0.1", "port": 0, "tls_cert_file": cert, "tls_key_file": key},
            apple=apple_settings(sim),
        )
        app = BrokerApp(settings, factories=factories(settings, ["apple"]))
        await app.start()
        try:
            assert app.base_url.startswith("https://")
            config = await subscribe(sim, app)
            assert config["notificationUrl"].startswith("https://")
            kafka = settings.kafka
            records = await read_until(
                kafka.bootstrap_servers, kafka.events_topic, lambda r: len(r) >= 1, 30
            )
        finally:
            await app.stop()
    finally:
        await sim.stop()
    assert [e.type.value for e in events_of(records)] == ["mdm.test"]


async def test_tracked_events_endpoint_auth_and_validation(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    no_stoken = AppleTenantSettings(notification_auth_tokens=[SecretStr("x")])
    base = apple_settings(sim)
    apple = base.model_copy(update={"tenants": {**base.tenants, "bare": no_stoken}})
    async with running_broker(broker_settings, apple) as app, aiohttp.ClientSession() as http:

        async def post(tenant: str, body: object, token: str | None = TRACKING_TOKEN) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            url = f"{app.base_url}/apple/{tenant}/tracked-events"
            async with http.post(url, json=body, headers=headers) as resp:
                return resp.status

        assert await post(TENANT, {"eventIds": ["e1"]}, token=None) == 401
        assert await post(TENANT, {"eventIds": ["e1"]}, token="nope") == 401
        assert await post("nobody", {"eventIds": ["e1"]}) == 404
        assert await post("bare", {"eventIds": ["e1"]}) == 409
        assert await post(TENANT, {"eventIds": []}) == 400
        assert await post(TENANT, {"eventIds": [1]}) == 400
        assert await post(TENANT, {"eventIds": ["e1", "e2"]}) == 202
        async with http.get(
            f"{app.base_url}/apple/{TENANT}/tracked-events",
            headers={"Authorization": f"Bearer {TRACKING_TOKEN}"},
        ) as resp:
            listed = await resp.json()
    assert sorted(e["eventId"] for e in listed["trackedEvents"]) == ["e1", "e2"]


async def test_tracking_is_refused_without_tracking_tokens(
    sim: AppleSimulator, broker_settings: BrokerSettings
) -> None:
    apple = apple_settings(sim, tracking_tokens=[])
    async with (
        running_broker(broker_settings, apple) as app,
        aiohttp.ClientSession() as http,
        http.post(
            f"{app.base_url}/apple/{TENANT}/tracked-events", json={"eventIds": ["e1"]}
        ) as resp,
    ):
        assert resp.status == 403
