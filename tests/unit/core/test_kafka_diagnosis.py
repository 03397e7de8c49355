"""diagnose(): aiokafka's texts (as logged by 0.14 against Kafka 4.3.1) map to causes and advice
naming the setting to fix."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
from aiokafka import errors

import broker.shard as shard_module
from broker.devtools.devcerts import CertValidity, DevCA
from broker.errors import KafkaAccessError
from broker.kafka_diagnosis import (
    ConnectCause,
    diagnose,
    read_refusal,
    refusal_in,
    stop_client,
    with_client_certificate,
)
from broker.metrics import BrokerMetrics
from broker.settings import KafkaSettings
from broker.shard import StateShard

BOOTSTRAP = errors.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 19401)]")


@pytest.mark.parametrize(
    ("line", "cause", "setting"),
    [
        (
            'Unable connect to "127.0.0.1:19401": [Error 58] SaslAuthenticationFailed: '
            "Authentication failed during authentication due to invalid credentials with SASL "
            "mechanism SCRAM-SHA-512",
            ConnectCause.AUTHENTICATION,
            "sasl_password",
        ),
        (
            'Unable connect to "127.0.0.1:19401": [Error 33] UnsupportedSaslMechanismError',
            ConnectCause.SASL_MECHANISM,
            "sasl_mechanism",
        ),
        (
            'Unable connect to "127.0.0.1:19401": [SSL: CERTIFICATE_VERIFY_FAILED] certificate '
            "verify failed: self-signed certificate in certificate chain (_ssl.c:1006)",
            ConnectCause.TLS_UNKNOWN_CA,
            "ssl_ca_file",
        ),
        (
            'Unable connect to "vm:19401": [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify '
            "failed: Hostname mismatch, certificate is not valid for 'vm'. (_ssl.c:1006)",
            ConnectCause.TLS_HOSTNAME,
            "bootstrap_servers",
        ),
        (
            'Unable connect to "127.0.0.1:19401": [SSL: CERTIFICATE_VERIFY_FAILED] certificate '
            "verify failed: certificate has expired (_ssl.c:1006)",
            ConnectCause.TLS_EXPIRED,
            "ssl_cert_file",
        ),
        (
            'Unable connect to "127.0.0.1:19402": Connection at 127.0.0.1:19402 closed',
            ConnectCause.TLS_HANDSHAKE,
            "security_protocol",
        ),
        (
            'Unable connect to "127.0.0.1:1": [Errno 111] Connect call failed',
            ConnectCause.UNREACHABLE,
            "bootstrap_servers",
        ),
    ],
)
def test_bootstrap_failures_are_told_apart_by_the_logged_reason(
    line: str, cause: ConnectCause, setting: str
) -> None:
    diagnosis = diagnose(BOOTSTRAP, ["some other warning", line])
    assert diagnosis.cause is cause
    assert setting in diagnosis.summary


def test_authorization_errors_name_acls() -> None:
    topic = diagnose(errors.TopicAuthorizationFailedError("mdm.events"))
    assert topic.cause is ConnectCause.TOPIC_AUTHORIZATION
    assert "ACL" in topic.summary
    assert (
        diagnose(errors.GroupAuthorizationFailedError()).cause is ConnectCause.GROUP_AUTHORIZATION
    )
    cluster = diagnose(errors.ClusterAuthorizationFailedError())
    assert cluster.cause is ConnectCause.CLUSTER_AUTHORIZATION


def test_ssl_error_raised_directly_is_classified() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer")
    assert diagnose(exc).cause is ConnectCause.TLS_UNKNOWN_CA


_SASL_LINE = (
    "Unable connect to node with id 1: [Error 58] SaslAuthenticationFailed: Authentication failed "
    "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
)


def test_refusal_in_logged_lines_takes_only_credentials_as_final() -> None:
    refused = refusal_in(["Unable to update metadata from [1]", _SASL_LINE])
    assert refused is not None
    assert refused.cause == "authentication"
    assert "sasl_password" in str(refused)
    assert refusal_in(["Unable connect to node with id 1: Connection refused"]) is None
    assert refusal_in(["[SSL: WRONG_VERSION_NUMBER] handshake failed"]) is None


class _Waiting:
    """A consumer whose group cannot be joined: aiokafka logs the refusal, getmany waits."""

    async def getmany(self, **_: object) -> dict[object, object]:
        logging.getLogger("aiokafka").error(_SASL_LINE)
        await asyncio.Event().wait()
        return {}


async def test_state_member_waiting_on_refused_reconnects_fails_named_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shard_module, "_ASSIGNMENT_WAIT_S", 0.05)
    metrics = BrokerMetrics()
    shard = StateShard(
        KafkaSettings(),
        group_id="g",
        prefix="",
        owner=None,  # type: ignore[arg-type]  # never reached
        client_id="c",
        metrics=metrics,
    )
    shard._consumer = _Waiting()
    with pytest.raises(KafkaAccessError, match="authentication: Kafka rejected the SASL"):
        await shard.run(asyncio.Event())
    counted = metrics.registry.get_sample_value(
        "mdm_broker_kafka_connect_errors_total", {"cause": "authentication"}
    )
    assert counted == 1


CLOSED = 'Unable connect to "127.0.0.1:1": KafkaConnectionError: Connection at 127.0.0.1:1 closed'


@pytest.mark.parametrize(
    ("validity", "cause", "says"),
    [
        ("expired", ConnectCause.TLS_EXPIRED, "kafka.security.ssl_cert_file expired at "),
        ("not_yet_valid", ConnectCause.TLS_EXPIRED, "ssl_cert_file is not valid before "),
        ("valid", ConnectCause.TLS_HANDSHAKE, "ssl_key_file if it requires a client"),
    ],
)
def test_closed_tls_connection_names_a_client_certificate_out_of_its_validity(
    validity: CertValidity, cause: ConnectCause, says: str, tmp_path: Path
) -> None:
    cert = DevCA(tmp_path).issue("client", "mdm-client", validity=validity).cert
    closed = diagnose(BOOTSTRAP, [CLOSED])
    assert closed.cause is ConnectCause.TLS_HANDSHAKE
    diagnosis = with_client_certificate(closed, cert)
    assert diagnosis.cause is cause
    assert says in diagnosis.summary
    assert CLOSED in diagnosis.summary


def test_client_certificate_is_checked_only_for_a_closed_tls_connection(tmp_path: Path) -> None:
    expired = DevCA(tmp_path).issue("client", "mdm-client", validity="expired").cert
    refused = diagnose(BOOTSTRAP, ["[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer"])
    assert with_client_certificate(refused, expired) is refused
    closed = diagnose(BOOTSTRAP, [CLOSED])
    assert with_client_certificate(closed, None) is closed
    assert with_client_certificate(closed, tmp_path / "missing.crt") is closed


@pytest.mark.parametrize(
    ("validity", "final"), [("expired", True), ("not_yet_valid", True), ("valid", False)]
)
def test_logged_closed_connections_are_final_only_with_a_client_certificate_out_of_validity(
    validity: CertValidity, final: bool, tmp_path: Path
) -> None:
    """A running consumer's reconnects Kafka closes (aiokafka only logs them): final when the
    certificate presented is outside its validity window, else a listener may just be restarting."""
    cert = DevCA(tmp_path).issue("client", "mdm-client", validity=validity).cert
    lines = ["Unable connect to node with id 1: Connection refused", CLOSED]
    assert refusal_in(lines) is None
    refused = refusal_in(lines, cert)
    assert (refused is not None) is final
    if refused is not None:
        assert refused.cause == "tls_certificate_expired"
        assert "the client certificate kafka.security.ssl_cert_file " in str(refused)


def test_read_refusal_judges_a_fetch_clears_its_lines_and_counts(tmp_path: Path) -> None:
    expired = DevCA(tmp_path).issue("client", "mdm-client", validity="expired").cert
    metrics = BrokerMetrics()
    lines = [CLOSED]
    refused = read_refusal(None, lines, expired, metrics)
    assert refused is not None
    assert refused.cause == "tls_certificate_expired"
    assert lines == []
    lines.append(CLOSED)
    raised = read_refusal(errors.KafkaConnectionError("Connection closed"), lines, expired, metrics)
    assert raised is not None
    assert raised.cause == "tls_certificate_expired"
    assert lines == []
    assert read_refusal(errors.KafkaTimeoutError(), ["slow"], expired, metrics) is None
    counted = metrics.registry.get_sample_value(
        "mdm_broker_kafka_connect_errors_total", {"cause": "tls_certificate_expired"}
    )
    assert counted == 2


def test_diagnose_checks_the_client_certificate_and_names_its_setting(tmp_path: Path) -> None:
    """``diagnose(..., cert_file, cert_setting)`` is ``with_client_certificate(diagnose(...))``:
    the setting named is the caller's (the consumer library spells it ``security.``)."""
    expired = DevCA(tmp_path).issue("client", "mdm-client", validity="expired").cert
    broker = diagnose(BOOTSTRAP, [CLOSED], expired)
    assert broker == with_client_certificate(diagnose(BOOTSTRAP, [CLOSED]), expired)
    assert broker.cause is ConnectCause.TLS_EXPIRED
    assert "the client certificate kafka.security.ssl_cert_file expired at " in broker.summary
    library = diagnose(BOOTSTRAP, [CLOSED], expired, "security.ssl_cert_file")
    assert "the client certificate security.ssl_cert_file expired at " in library.detail
    assert diagnose(BOOTSTRAP, [CLOSED], None).cause is ConnectCause.TLS_HANDSHAKE


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class _Fetcher:
    def __init__(self, pending: set[asyncio.Task[None]]) -> None:
        self._fetch_task: asyncio.Task[None] | None = None
        self._pending_tasks = pending


class _QuirkyConsumer:
    """aiokafka 0.14's consumer.stop() when a fetch task was backing off: the fetcher cancels
    that task and awaits it, its CancelledError escapes, the rest of the close is skipped."""

    def __init__(self, fetches: list[asyncio.Task[None]]) -> None:
        self._client = _Client()
        self._fetcher = _Fetcher(set(fetches))

    async def stop(self) -> None:
        backing_off = next(iter(self._fetcher._pending_tasks))
        backing_off.cancel()
        await backing_off


async def test_stop_client_finishes_a_close_aiokafka_cut_short() -> None:
    fetches = [asyncio.create_task(asyncio.sleep(60)) for _ in range(2)]
    await asyncio.sleep(0)
    consumer = _QuirkyConsumer(fetches)
    await stop_client(consumer)  # aiokafka's CancelledError is not the caller's
    assert consumer._client.closed
    assert all(f.done() for f in fetches)


async def test_stop_client_closes_then_lets_the_callers_cancellation_through() -> None:
    fetches = [asyncio.create_task(asyncio.sleep(60)) for _ in range(2)]
    await asyncio.sleep(0)
    consumer = _QuirkyConsumer(fetches)

    async def cleanup_after_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await stop_client(consumer)
            raise

    task = asyncio.create_task(cleanup_after_cancel())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert consumer._client.closed
    assert all(f.done() for f in fetches)
