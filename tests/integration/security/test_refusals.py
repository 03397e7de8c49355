"""Kafka refuses the broker: each cause gets its own clear error, /readyz 503 with the reason, a
metric, no secret anywhere, and no vendor acknowledgement; `kafka-check` reports the same cause.

Causes: wrong SCRAM password, untrusted CA, host name not in the certificate, and (with the
authorizer) no WRITE ACL on the events topic.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.kapua.adapter import KapuaAdapter
from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.consumer import ConsumerError, ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.devtools.devcerts import DevCA
from broker.devtools.devkafka import KafkaCluster
from broker.kafka_check import run_checks
from broker.kafka_diagnosis import ConnectCause
from broker.settings import KafkaSettings
from broker.topics import create_topics
from simulators.android.notifications import generate
from simulators.android.runner import SimulatorServer
from simulators.android.server import SimulatorConfig
from simulators.kapua import KapuaSimulator, SimConfig
from tests.e2e.android.support import android_settings, simulator_with_key
from tests.integration.kapua.helpers import (
    all_closed,
    closed_total,
    kapua_section,
    wait_owning,
)
from tests.integration.security.helpers import (
    DESCRIBE,
    GROUP,
    READ,
    SECRETS,
    TOPIC,
    WRITE,
    grant,
    kafka_settings,
    wait_for,
)
from tests.unit.apple.seeds import ASSET_COUNT, UID

pytestmark = [pytest.mark.kafka]

WRONG_PASSWORD = "not-the-password-31x"
APPLE_TOKEN = "apple-notification-token-5q"


def refused_kafka(case: str, cluster: KafkaCluster, tmp_path: Path, prefix: str) -> KafkaSettings:
    """Kafka settings that the secured node refuses for ``case``."""
    if case == "wrong_password":
        security = cluster.scram_security("mdm-broker", password=WRONG_PASSWORD)
        return kafka_settings(cluster.bootstrap_servers, security, prefix)
    if case == "unknown_ca":
        other = DevCA(tmp_path / "other-ca", name="some-other-ca")
        security = cluster.scram_security("mdm-broker").model_copy(
            update={"ssl_ca_file": other.ca_file}
        )
        return kafka_settings(cluster.bootstrap_servers, security, prefix)
    assert case == "hostname_mismatch"  # the certificate names 127.0.0.1 only
    port = cluster.bootstrap_servers.rpartition(":")[2]
    return kafka_settings(f"localhost:{port}", cluster.scram_security("mdm-broker"), prefix)


def apple() -> AppleSettings:
    tenant = AppleTenantSettings(
        notification_auth_tokens=[SecretStr(APPLE_TOKEN)], expected_uid=UID
    )
    return AppleSettings(enabled=True, tenants={"acme": tenant}, api_base_url="http://127.0.0.1:9")


async def post_apple(session: aiohttp.ClientSession, app: BrokerApp) -> int:
    async with session.post(
        f"{app.base_url}/apple/acme/notifications",
        json=ASSET_COUNT,
        headers={"Authorization": f"Bearer {APPLE_TOKEN}"},
    ) as response:
        return response.status


async def readyz(session: aiohttp.ClientSession, app: BrokerApp) -> tuple[int, dict[str, str]]:
    async with session.get(f"{app.base_url}/readyz") as response:
        body = await response.json()
        return response.status, body.get("problems", {})


def assert_no_secret(text: str) -> None:
    for secret in (*SECRETS, WRONG_PASSWORD, APPLE_TOKEN):
        assert secret not in text


CASES = {
    "wrong_password": (ConnectCause.AUTHENTICATION, "kafka.security.sasl_username"),
    "unknown_ca": (ConnectCause.TLS_UNKNOWN_CA, "kafka.security.ssl_ca_file"),
    "hostname_mismatch": (ConnectCause.TLS_HOSTNAME, "kafka.bootstrap_servers"),
}


async def refused_app_acks_nothing(
    kafka: KafkaSettings, cause: ConnectCause, caplog: pytest.LogCaptureFixture
) -> tuple[str, str, str]:
    """Start a BrokerApp (with Apple) that Kafka refuses for ``cause``: /readyz 503 naming it,
    Apple answered 503, the cause counted, nothing published, ONE error line however many
    retries. Returns the /readyz reason, that log line and the metrics text."""
    caplog.set_level(logging.DEBUG)
    settings = BrokerSettings(kafka=kafka, http={"host": "127.0.0.1", "port": 0}, apple=apple())
    app = BrokerApp(settings, CollectorRegistry(), factories(settings, ["apple"]))
    await app.start()  # stays up, not ready, retrying in the background
    try:
        async with aiohttp.ClientSession() as session:
            status, problems = await readyz(session, app)
            assert status == 503
            assert problems["kafka"].startswith(f"{cause.value}: ")
            assert await post_apple(session, app) == 503  # Apple will retry; nothing acked
        metrics = generate_latest(app.metrics.registry).decode()
        errors = app.metrics.registry.get_sample_value(
            "mdm_broker_kafka_connect_errors_total", {"cause": cause.value}
        )
        assert errors is not None
        assert errors >= 1
        assert app.metrics.registry.get_sample_value("mdm_broker_events_published_total") is None
    finally:
        await app.stop()
    ours = [r for r in caplog.records if r.name.startswith("broker") and r.levelno >= logging.ERROR]
    assert len(ours) == 1, [r.getMessage() for r in ours]  # one line, however many retries
    assert cause.value in ours[0].getMessage()
    return problems["kafka"], ours[0].getMessage(), metrics


@pytest.mark.parametrize("case", list(CASES))
async def test_refused_connection_is_named_not_ready_and_acks_nothing(
    case: str,
    secure_kafka: KafkaCluster,
    tmp_path: Path,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cause, setting = CASES[case]
    kafka = refused_kafka(case, secure_kafka, tmp_path, topic_prefix)
    reason, line, metrics = await refused_app_acks_nothing(kafka, cause, caplog)
    assert setting in reason
    assert setting in line
    assert_no_secret(metrics)
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records))

    rows = await run_checks(kafka)
    assert [(r.check, r.result) for r in rows] == [("connect + authenticate", "FAILED")]
    assert setting in rows[0].detail
    assert_no_secret(rows[0].detail)


async def test_missing_write_acl_on_events_acks_no_vendor_until_granted(
    secure_kafka: KafkaCluster,
    tmp_path: Path,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`no-write` may write the DLQ and state topics but not the events topic. While refused:
    /readyz 503 naming the ACL, Apple 503, no EMM set acked, no Kapua progress published; once
    WRITE is granted the broker recovers by itself and every notification lands."""
    admin_kafka = kafka_settings(
        secure_kafka.bootstrap_servers, secure_kafka.scram_security("mdm-broker"), topic_prefix
    )
    await create_topics(admin_kafka)
    events, group = admin_kafka.events_topic, f"{topic_prefix}-kapua"
    await grant(
        secure_kafka,
        [
            ("User:no-write", TOPIC, topic, op)
            for topic in (admin_kafka.dlq_topic, admin_kafka.state_topic)
            for op in (WRITE, DESCRIBE)
        ]
        + [("User:no-write", GROUP, group, READ)],
    )
    kafka = admin_kafka.model_copy(update={"security": secure_kafka.scram_security("no-write")})
    caplog.set_level(logging.INFO)
    key = tmp_path / "sa.json"
    emm = simulator_with_key(key, SimulatorConfig(hold_s=0.5, ack_deadline_s=3.0))
    async with SimulatorServer(emm) as emm_server, KapuaSimulator(SimConfig(devices=2)) as kapua:
        settings = BrokerSettings(
            kafka=kafka,
            http={"host": "127.0.0.1", "port": 0},
            apple=apple(),
            android=android_settings(emm_server, key, pullers=2, ack_budget_s=2.0),
            kapua=kapua_section(kapua, group, watch_topic_enabled=False),
        )
        app = BrokerApp(
            settings, CollectorRegistry(), factories(settings, ["apple", "android", "kapua"])
        )
        await app.start()
        try:
            await wait_owning([kapua_of(app)])
            emm.pool.enqueue(generate(5, seed=7))
            ops = [
                kapua.state.start_operation("AQ", d, steps=2, step_interval_s=0.2, fail=False)
                for d in kapua.state.devices["AQ"]
            ]
            async with aiohttp.ClientSession() as session:
                assert await post_apple(session, app) == 503

                async def refused() -> bool:
                    status, problems = await readyz(session, app)
                    return status == 503 and problems.get("kafka", "").startswith(
                        "topic_authorization: "
                    )

                await wait_for(refused, 30, "/readyz naming the missing ACL")
                _, problems = await readyz(session, app)
                assert "ACL" in problems["kafka"]
                assert events in problems["kafka"]
                # Intake is refused for a while: nothing is acknowledged to any vendor.
                registry = app.metrics.registry

                async def pullers_parked() -> bool:
                    parked = registry.get_sample_value("mdm_broker_android_pullers_parked")
                    return (parked or 0) >= 2

                await wait_for(pullers_parked, 30, "EMM pullers parked while refused")
                assert await post_apple(session, app) == 503
                assert emm.pool.stats.acked_notifications == 0
                assert closed_total(kapua_of(app)) == 0
                published = app.metrics.registry.get_sample_value(
                    "mdm_broker_events_published_total",
                    {"vendor": "kapua", "type": "mdm.operation.progressed"},
                )
                assert not published

                await grant(secure_kafka, [("User:no-write", TOPIC, events, WRITE)])

                async def ready() -> bool:
                    return (await readyz(session, app))[0] == 200

                await wait_for(ready, 30, "ready again once WRITE is granted (no restart)")
                assert await post_apple(session, app) == 200
            await wait_for(
                lambda: _true(emm.pool.stats.acked_notifications == 5), 60, "every EMM set acked"
            )

            async def kapua_done() -> bool:
                return all_closed(kapua) and closed_total(kapua_of(app)) == len(ops)

            await wait_for(kapua_done, 60, "every Kapua operation closed and published")
            errors = app.metrics.registry.get_sample_value(
                "mdm_broker_kafka_connect_errors_total", {"cause": "topic_authorization"}
            )
            assert errors is not None
            assert errors >= 1
            metrics = generate_latest(app.metrics.registry).decode()
        finally:
            await app.stop()
    refusal_lines = [r for r in caplog.records if "refused a write" in r.getMessage()]
    assert len(refusal_lines) == 1
    assert refusal_lines[0].levelno == logging.ERROR
    assert_no_secret(metrics)
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records))


async def _true(value: bool) -> bool:
    return value


def kapua_of(app: BrokerApp) -> KapuaAdapter:
    return next(a for a in app.adapters if isinstance(a, KapuaAdapter))


async def test_idempotent_consumer_names_the_refusal(secure_kafka: KafkaCluster) -> None:
    """The consumer library's start error names the cause and its own setting; no secret."""
    settings = ConsumerSettings(
        bootstrap_servers=secure_kafka.bootstrap_servers,
        topic="any.events",
        group_id="refused-consumer",
        security=secure_kafka.scram_security("mdm-broker", password=WRONG_PASSWORD),
        request_timeout_s=5.0,
    )

    async def handle(event: object, tx: None) -> None:
        raise AssertionError("nothing is consumed")

    consumer = IdempotentConsumer(settings, InMemoryStore(), handle)
    with pytest.raises(ConsumerError) as info:
        await consumer.start()
    message = str(info.value)
    assert "Kafka rejected the SASL credentials" in message
    assert "check security.sasl_username / sasl_password" in message
    assert "kafka.security" not in message
    assert_no_secret(message)
