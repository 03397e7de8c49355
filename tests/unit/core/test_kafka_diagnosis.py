"""diagnose(): aiokafka's texts (as logged by 0.14 against Kafka 4.3.1) map to causes and advice
naming the setting to fix."""

from __future__ import annotations

import ssl

import pytest
from aiokafka import errors

from broker.kafka_diagnosis import ConnectCause, diagnose

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
