"""A real Kafka node serving a certificate that has expired or is not yet valid (signed by the CA
the broker trusts): the broker names ``tls_certificate_expired`` in one log line, in ``/readyz``
and in ``mdm-broker kafka-check`` (exit 1), and acknowledges nothing to a vendor meanwhile.

One extra node for the module (started in ~10 s): its mutual-TLS listener serves an expired
certificate, its TLS listener one valid from tomorrow. Kafka refuses to start when its
inter-broker listener's certificate fails its own truststore, so the shared ``secure_kafka`` node
cannot serve these. An expired CLIENT certificate is refused by ``secure_kafka``'s mTLS listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.app.cli import main
from broker.consumer import ConsumerError, ConsumerSettings, IdempotentConsumer, InMemoryStore
from broker.devtools.devcerts import CertValidity
from broker.devtools.devkafka import KafkaCluster, SecureListeners
from broker.errors import KafkaAccessError
from broker.kafka_check import run_checks
from broker.kafka_diagnosis import ConnectCause
from broker.kafka_security import KafkaSecurity
from broker.metrics import BrokerMetrics
from broker.shard import StateShard
from broker.topics import create_topics
from tests.integration.security.helpers import (
    NoOwner,
    kafka_settings,
    state_consumers_refused,
    wait_for,
)
from tests.integration.security.test_refusals import refused_app_acks_nothing

pytestmark = [pytest.mark.kafka]

EXPIRED = ConnectCause.TLS_EXPIRED.value


@pytest.fixture(scope="module")
def bad_cert_kafka() -> Iterator[KafkaCluster]:
    secure = SecureListeners(
        scram_users={"admin": "admin-secret-b4d"},
        authorizer=False,
        mtls_server_validity="expired",
        tls_listener="not_yet_valid",
    )
    with KafkaCluster(secure=secure) as cluster:
        yield cluster


def _listener(cluster: KafkaCluster, validity: str) -> tuple[str, KafkaSecurity, str]:
    """Bootstrap, client settings and the OpenSSL reason for the listener serving ``validity``."""
    if validity == "expired":
        return cluster.mtls_bootstrap_servers, cluster.mtls_security(), "certificate has expired"
    return cluster.tls_bootstrap_servers, cluster.tls_security(), "certificate is not yet valid"


def _config(path: Path, bootstrap: str, security: KafkaSecurity, prefix: str) -> Path:
    tls = "".join(
        f'{name} = "{value}"\n'
        for name, value in (
            ("ssl_ca_file", security.ssl_ca_file),
            ("ssl_cert_file", security.ssl_cert_file),
            ("ssl_key_file", security.ssl_key_file),
        )
        if value is not None
    )
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"
events_topic = "{prefix}.events"
dlq_topic = "{prefix}.events.dlq"
state_topic = "{prefix}.state"
request_timeout_s = 5.0
[kafka.security]
security_protocol = "SSL"
ssl_use_system_ca = false
{tls}"""
    )
    return path


@pytest.mark.parametrize("validity", ["expired", "not_yet_valid"])
async def test_bad_server_certificate_is_named_not_ready_and_acks_nothing(
    validity: str,
    bad_cert_kafka: KafkaCluster,
    tmp_path: Path,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bootstrap, security, reason = _listener(bad_cert_kafka, validity)
    kafka = kafka_settings(bootstrap, security, topic_prefix)
    reason_shown, line, _ = await refused_app_acks_nothing(kafka, ConnectCause.TLS_EXPIRED, caplog)
    for text in (reason_shown, line):
        assert reason in text
        assert "kafka.security.ssl_cert_file" in text

    rows = await run_checks(kafka)
    assert [(r.check, r.result) for r in rows] == [("connect + authenticate", "FAILED")]
    assert reason in rows[0].detail

    capsys.readouterr()
    config = _config(tmp_path / "broker.toml", bootstrap, security, topic_prefix)
    # The CLI runs its own event loop (asyncio.run): call it from a thread.
    assert await asyncio.to_thread(main, ["kafka-check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "a certificate has expired or is not yet valid" in out
    assert reason in out


@pytest.mark.parametrize("validity", ["expired", "not_yet_valid"])
async def test_bad_client_certificate_is_named_not_ready_and_acks_nothing(
    validity: CertValidity,
    secure_kafka: KafkaCluster,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kafka's mTLS listener refuses a client certificate outside its validity window by closing
    the connection: aiokafka only reports ``Connection ... closed``. The broker checks the
    certificate it presented and names it."""
    client = secure_kafka.pki.ca.issue(
        f"{validity}-{topic_prefix}", "mdm-client", validity=validity
    )
    security = secure_kafka.mtls_security().model_copy(
        update={"ssl_cert_file": client.cert, "ssl_key_file": client.key}
    )
    kafka = kafka_settings(secure_kafka.mtls_bootstrap_servers, security, topic_prefix)
    when = "expired" if validity == "expired" else "is not valid before"
    reason_shown, line, _ = await refused_app_acks_nothing(kafka, ConnectCause.TLS_EXPIRED, caplog)
    for text in (reason_shown, line):
        assert f"the client certificate kafka.security.ssl_cert_file {when}" in text
        assert "closed" in text  # what Kafka did, as aiokafka saw it

    rows = await run_checks(kafka)
    assert [(r.check, r.result) for r in rows] == [("connect + authenticate", "FAILED")]
    assert f"the client certificate kafka.security.ssl_cert_file {when}" in rows[0].detail


async def test_expired_client_certificate_of_a_state_consumer_is_named(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    """The state-topic consumers' first connection (the shard member, the state loader) says the
    same as the producer's, not ``tls_handshake``."""
    client = secure_kafka.pki.ca.issue(f"state-{topic_prefix}", "mdm-client", validity="expired")
    security = secure_kafka.mtls_security().model_copy(
        update={"ssl_cert_file": client.cert, "ssl_key_file": client.key}
    )
    kafka = kafka_settings(secure_kafka.mtls_bootstrap_servers, security, topic_prefix)
    for refused in await state_consumers_refused(kafka, f"{topic_prefix}-g"):
        assert refused.cause == EXPIRED
        assert "the client certificate kafka.security.ssl_cert_file expired at " in str(refused)


async def test_expired_client_certificate_of_the_consumer_library_is_named(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    """``IdempotentConsumer.start`` names the expired certificate and its own setting
    (``security.ssl_cert_file``), not ``tls_handshake``."""
    client = secure_kafka.pki.ca.issue(f"lib-{topic_prefix}", "mdm-client", validity="expired")
    settings = ConsumerSettings(
        bootstrap_servers=secure_kafka.mtls_bootstrap_servers,
        topic=f"{topic_prefix}.events",
        group_id=f"{topic_prefix}-lib",
        security=secure_kafka.mtls_security().model_copy(
            update={"ssl_cert_file": client.cert, "ssl_key_file": client.key}
        ),
        request_timeout_s=5.0,
    )

    async def handle(event: object, tx: None) -> None:
        raise AssertionError("nothing is consumed")

    with pytest.raises(ConsumerError) as info:
        await IdempotentConsumer(settings, InMemoryStore(), handle).start()
    message = str(info.value)
    assert "the client certificate security.ssl_cert_file expired at " in message
    assert "kafka.security" not in message


async def test_client_certificate_expiring_after_start_up_is_named_on_reconnect(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    """A state-topic member connects with a client certificate that expires while it runs. Kafka
    keeps the open connections; after a restart it refuses the reconnects by closing them, which
    aiokafka only logs (and retries forever). The member's read loop checks the certificate it
    presents and ends with ``tls_certificate_expired`` naming it (counted), as at first
    connection, instead of reading nothing in silence."""
    kafka = kafka_settings(
        secure_kafka.mtls_bootstrap_servers, secure_kafka.mtls_security(), topic_prefix
    )
    await create_topics(kafka)
    # long enough for the member to connect and load on a loaded 2-core machine
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=8)
    client = secure_kafka.pki.ca.issue(f"short-{topic_prefix}", "mdm-client", not_after=expires)
    security = kafka.security.model_copy(
        update={"ssl_cert_file": client.cert, "ssl_key_file": client.key}
    )
    metrics = BrokerMetrics()
    shard = StateShard(
        kafka.model_copy(update={"security": security}),
        group_id=f"{topic_prefix}-short",
        prefix="",
        owner=NoOwner(),
        client_id="t",
        metrics=metrics,
    )
    stop = asyncio.Event()
    await shard.start()
    run = asyncio.create_task(shard.run(stop))
    try:

        async def loaded() -> bool:
            return bool(shard.loaded)

        await wait_for(loaded, 30, "the member loaded its state partitions")
        await asyncio.to_thread(secure_kafka.stop_node, 0)  # every connection drops
        left = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
        await asyncio.sleep(max(0.0, left) + 0.5)  # the restarted node sees an expired one
        await asyncio.to_thread(secure_kafka.restart_node, 0)
        with pytest.raises(KafkaAccessError) as info:
            await asyncio.wait_for(asyncio.shield(run), 60)
    finally:
        stop.set()
        run.cancel()
        with contextlib.suppress(BaseException):
            await run
        await shard.stop()
    assert info.value.cause == EXPIRED
    assert "the client certificate kafka.security.ssl_cert_file expired at " in str(info.value)
    counted = metrics.registry.get_sample_value(
        "mdm_broker_kafka_connect_errors_total", {"cause": EXPIRED}
    )
    assert counted == 1
