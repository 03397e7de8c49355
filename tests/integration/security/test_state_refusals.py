"""Kafka refuses the state-topic consumers (the sharding group member, the Kapua watch-request
consumer, the state loader): the cause and the ACL to grant are named in one log line (no
traceback), counted, and shown by /readyz (``task:kapua-shard``, ``task:kapua-watch``); once the
ACL is granted the members recover by themselves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.devtools.devkafka import KafkaCluster
from broker.errors import KafkaAccessError
from broker.health import KafkaHealth
from broker.kafka_diagnosis import ConnectCause, Diagnosis
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.state import StateWriter, load_state
from broker.supervisor import SupervisorSettings
from broker.topics import TopicSpec, create_topic_specs, create_topics
from simulators.kapua import KapuaSimulator, SimConfig
from tests.integration.kapua.helpers import kapua_section
from tests.integration.security.helpers import (
    DESCRIBE,
    GROUP,
    READ,
    TOPIC,
    WRITE,
    deny,
    grant,
    kafka_settings,
    state_consumers_refused,
    wait_for,
)
from tests.integration.security.test_refusals import assert_no_secret, readyz

pytestmark = [pytest.mark.kafka]

QUICK_SUPERVISOR = SupervisorSettings(
    grace_s=1.0, stable_after_s=0.5, restart_initial_s=0.2, restart_max_s=1.0
)


def _kapua_app(kafka: KafkaSettings, sim: KapuaSimulator, group: str, *, watch: bool) -> BrokerApp:
    """A broker with only the Kapua adapter (consumer group ``group``, the watch-request member
    when ``watch``) against ``sim``, restarting failed tasks quickly; not started."""
    settings = BrokerSettings(
        kafka=kafka,
        http={"host": "127.0.0.1", "port": 0},
        kapua=kapua_section(sim, group, watch_topic_enabled=watch),
        supervisor=QUICK_SUPERVISOR,
    )
    return BrokerApp(settings, CollectorRegistry(), factories(settings, ["kapua"]))


def _names(
    session: aiohttp.ClientSession, app: BrokerApp, task: str, cause: str
) -> Callable[[], Awaitable[bool]]:
    """A check: /readyz names ``cause`` for the supervised task ``task``."""

    async def check() -> bool:
        _, problems = await readyz(session, app)
        return cause in problems.get(f"task:{task}", "")

    return check


async def _writable_kafka(cluster: KafkaCluster, prefix: str) -> KafkaSettings:
    """Topics created; ``no-write`` may write all three (so only the READ side is refused)."""
    admin = kafka_settings(cluster.bootstrap_servers, cluster.scram_security("mdm-broker"), prefix)
    await create_topics(admin)
    topics = (admin.events_topic, admin.dlq_topic, admin.state_topic)
    await grant(
        cluster, [("User:no-write", TOPIC, t, op) for t in topics for op in (WRITE, DESCRIBE)]
    )
    return admin.model_copy(update={"security": cluster.scram_security("no-write")})


@pytest.mark.parametrize("refused", ["group", "topic"])
async def test_state_consumer_refusal_is_named_counted_and_not_ready(
    refused: str,
    secure_kafka: KafkaCluster,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = await _writable_kafka(secure_kafka, topic_prefix)
    group = f"{topic_prefix}-kapua"
    watch = refused == "group"  # no READ on either group: the watch member is refused too
    if watch:
        admin = kafka.model_copy(update={"security": secure_kafka.scram_security("mdm-broker")})
        await create_topic_specs(admin, [TopicSpec(f"{group}.watch", 1, 1, {})])
    if refused == "topic":  # the group is granted, READ on the state topic denied
        await grant(secure_kafka, [("User:no-write", GROUP, group, READ)])
        await deny(secure_kafka, [("User:no-write", TOPIC, kafka.state_topic, READ)])
    cause = f"{refused}_authorization"
    caplog.set_level(logging.INFO)
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        app = _kapua_app(kafka, sim, group, watch=watch)
        await app.start()
        try:
            async with aiohttp.ClientSession() as session:
                tasks = ["task:kapua-shard"] + (["task:kapua-watch"] if watch else [])

                async def named() -> bool:  # each task is named once down for its grace
                    status, problems = await readyz(session, app)
                    return status == 503 and all(cause in problems.get(t, "") for t in tasks)

                await wait_for(named, 60, f"/readyz naming {cause} for {tasks}")
                _, problems = await readyz(session, app)
                reason = problems["task:kapua-shard"]
                assert "ACL" in reason
                assert (group if refused == "group" else kafka.state_topic) in reason
                assert "kafka" not in problems  # the events topic is fine: only this task
                errors = app.metrics.registry.get_sample_value(
                    "mdm_broker_kafka_connect_errors_total", {"cause": cause}
                )
                assert errors is not None
                assert errors >= 1
                if refused == "group":
                    await grant(
                        secure_kafka,
                        [("User:no-write", GROUP, g, READ) for g in (group, f"{group}-watch")],
                    )

                    async def ready() -> bool:
                        return (await readyz(session, app))[0] == 200

                    await wait_for(ready, 60, "ready again once READ on the groups is granted")
            metrics = generate_latest(app.metrics.registry).decode()
        finally:
            await app.stop()
    lines = [r for r in caplog.records if "task kapua-shard failed" in r.getMessage()]
    assert lines
    assert all(r.exc_info is None and cause in r.getMessage() for r in lines)
    assert_no_secret(metrics)
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records))


async def test_state_loader_refusal_names_the_acl(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    kafka = await _writable_kafka(secure_kafka, topic_prefix)
    async with KafkaPublisher(kafka, KafkaHealth(), BrokerMetrics()) as publisher:
        await StateWriter(publisher).put("apple/sync/acme", {"tenant": "acme"})
    await deny(secure_kafka, [("User:no-write", TOPIC, kafka.state_topic, READ)])
    with pytest.raises(KafkaAccessError) as info:
        await load_state(kafka, timeout_s=30)
    assert info.value.cause == "topic_authorization"
    assert "grant this principal the operation on the topic" in str(info.value)


async def test_wrong_sasl_password_of_a_state_consumer_is_diagnosed_like_the_producers(
    secure_kafka: KafkaCluster, topic_prefix: str
) -> None:
    """The first connection of the shard member and of the state loader: not a bare
    ``KafkaConnectionError("Unable to bootstrap")`` but the producer's one-line diagnosis."""
    good = await _writable_kafka(secure_kafka, topic_prefix)
    kafka = good.model_copy(
        update={"security": secure_kafka.scram_security("no-write", password="not-the-password")}
    )
    advice = Diagnosis(ConnectCause.AUTHENTICATION, "").summary
    metrics = BrokerMetrics()
    for refused in await state_consumers_refused(kafka, f"{topic_prefix}-g", metrics):
        assert refused.cause == "authentication"
        assert str(refused).startswith(f"authentication: {advice} (")
        assert "\n" not in str(refused)
        assert_no_secret(str(refused))
    counted = metrics.registry.get_sample_value(
        "mdm_broker_kafka_connect_errors_total", {"cause": "authentication"}
    )
    assert counted == 1


async def test_a_restarted_state_consumer_refused_its_password_is_named_in_readyz(
    secure_kafka: KafkaCluster, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Kapua's shard member restarts (here: no READ on its group yet) while the principal's
    password is changed on Kafka: the producer's connections stay authenticated; a new member is
    refused at its first connection, and one that connected just before the change is refused when
    it reconnects (aiokafka only logs that); either way /readyz and the log name the SASL
    credentials as for the producer."""
    user = f"u-{topic_prefix}"[:60]
    await asyncio.to_thread(secure_kafka.set_scram_password, user, "first-secret-1")
    admin = kafka_settings(
        secure_kafka.bootstrap_servers, secure_kafka.scram_security("mdm-broker"), topic_prefix
    )
    await create_topics(admin)
    topics = (admin.events_topic, admin.dlq_topic, admin.state_topic)
    await grant(
        secure_kafka,
        [(f"User:{user}", TOPIC, t, op) for t in topics for op in (READ, WRITE, DESCRIBE)],
    )
    kafka = admin.model_copy(
        update={"security": secure_kafka.scram_security(user, password="first-secret-1")}
    )
    advice = Diagnosis(ConnectCause.AUTHENTICATION, "").summary
    caplog.set_level(logging.INFO)
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        app = _kapua_app(kafka, sim, f"{topic_prefix}-kapua", watch=False)
        await app.start()
        try:
            async with aiohttp.ClientSession() as session:
                group_refused = _names(session, app, "kapua-shard", "group_authorization")
                await wait_for(group_refused, 60, "the shard member refused its group")
                await asyncio.to_thread(secure_kafka.set_scram_password, user, "second-secret-2")

                password_named = _names(session, app, "kapua-shard", "authentication")
                await wait_for(password_named, 60, "/readyz naming the SASL credentials")
                status, problems = await readyz(session, app)
            metrics = generate_latest(app.metrics.registry).decode()
        finally:
            await app.stop()
    assert status == 503
    assert f"KafkaAccessError: authentication: {advice}" in problems["task:kapua-shard"]
    assert 'mdm_broker_kafka_connect_errors_total{cause="authentication"}' in metrics
    lines = [
        r
        for r in caplog.records
        if "task kapua-shard failed" in r.getMessage() and "authentication" in r.getMessage()
    ]
    assert lines
    assert all(r.exc_info is None and advice in r.getMessage() for r in lines)
    texts = "\n".join(r.getMessage() for r in caplog.records)
    assert "first-secret-1" not in texts
    assert "second-secret-2" not in texts


async def test_a_running_watch_member_refused_its_password_on_reconnect_is_named_in_readyz(
    secure_kafka: KafkaCluster, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Kapua watch-request member reads happily; the principal's password is changed and
    Kafka restarts. aiokafka only logs the refused reconnects and retries forever: the member's
    read loop names them (task ``kapua-watch`` in /readyz and one log line, counted), as the
    state-topic members do, instead of reading nothing in silence."""
    user = f"w-{topic_prefix}"[:60]
    await asyncio.to_thread(secure_kafka.set_scram_password, user, "watch-secret-1")
    admin = kafka_settings(
        secure_kafka.bootstrap_servers, secure_kafka.scram_security("mdm-broker"), topic_prefix
    )
    await create_topics(admin)
    group = f"{topic_prefix}-kapua"
    await create_topic_specs(admin, [TopicSpec(f"{group}.watch", 1, 1, {})])
    topics = (admin.events_topic, admin.dlq_topic, admin.state_topic, f"{group}.watch")
    grants = [(f"User:{user}", TOPIC, t, op) for t in topics for op in (READ, WRITE, DESCRIBE)]
    grants += [(f"User:{user}", GROUP, g, READ) for g in (group, f"{group}-watch")]
    await grant(secure_kafka, grants)
    kafka = admin.model_copy(
        update={"security": secure_kafka.scram_security(user, password="watch-secret-1")}
    )
    advice = Diagnosis(ConnectCause.AUTHENTICATION, "").summary
    caplog.set_level(logging.INFO)
    async with KapuaSimulator(SimConfig(devices=1)) as sim:
        app = _kapua_app(kafka, sim, group, watch=True)
        await app.start()
        try:
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool:
                    return (await readyz(session, app))[0] == 200

                await wait_for(ready, 60, "ready: the watch member reads its topic")
                await asyncio.to_thread(secure_kafka.set_scram_password, user, "watch-secret-2")
                await asyncio.to_thread(secure_kafka.stop_node, 0)  # every connection drops
                await asyncio.to_thread(secure_kafka.restart_node, 0)

                watch_named = _names(session, app, "kapua-watch", "authentication")
                await wait_for(watch_named, 60, "/readyz naming the watch member's credentials")
                _, problems = await readyz(session, app)
            metrics = generate_latest(app.metrics.registry).decode()
        finally:
            await app.stop()
    assert f"KafkaAccessError: authentication: {advice}" in problems["task:kapua-watch"]
    assert 'mdm_broker_kafka_connect_errors_total{cause="authentication"}' in metrics
    lines = [r for r in caplog.records if "task kapua-watch failed" in r.getMessage()]
    assert lines
    assert all(r.exc_info is None and advice in r.getMessage() for r in lines)
    texts = "\n".join(r.getMessage() for r in caplog.records)
    assert "watch-secret-1" not in texts
    assert "watch-secret-2" not in texts
