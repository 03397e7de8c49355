"""Tell the operator WHY a Kafka client cannot connect or is refused, and which setting to fix.

aiokafka raises the same ``KafkaConnectionError("Unable to bootstrap ...")`` for a wrong password,
an untrusted CA, a host name mismatch or a closed port; the real reason is only logged by its
``aiokafka`` logger. :func:`capture_aiokafka_errors` records those log lines while a client
connects, and :func:`diagnose` turns the exception plus the lines into a :class:`Diagnosis`:
a :class:`ConnectCause` (a fixed set: safe as a metric label) and one sentence naming the cause
and the setting to fix. Neither ever contains a secret (aiokafka's texts carry none, and only
setting NAMES are added).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import errors as kafka_errors

from broker.errors import KafkaAccessError

if TYPE_CHECKING:
    from broker.metrics import BrokerMetrics


class ConnectCause(StrEnum):
    """Why Kafka refused or could not be reached (label ``cause``)."""

    AUTHENTICATION = "authentication"
    SASL_MECHANISM = "sasl_mechanism"
    TLS_UNKNOWN_CA = "tls_unknown_ca"
    TLS_HOSTNAME = "tls_hostname_mismatch"
    TLS_EXPIRED = "tls_certificate_expired"
    TLS_HANDSHAKE = "tls_handshake"
    TOPIC_AUTHORIZATION = "topic_authorization"
    GROUP_AUTHORIZATION = "group_authorization"
    CLUSTER_AUTHORIZATION = "cluster_authorization"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    OTHER = "other"


_ADVICE: dict[ConnectCause, str] = {
    ConnectCause.AUTHENTICATION: (
        "Kafka rejected the SASL credentials: check {security}sasl_username / "
        "sasl_password (or *_file) and {security}sasl_mechanism"
    ),
    ConnectCause.SASL_MECHANISM: (
        "Kafka does not accept this SASL mechanism on this listener: check {security}sasl_mechanism"
    ),
    ConnectCause.TLS_UNKNOWN_CA: (
        "TLS handshake failed: the Kafka certificate is not signed by a trusted CA: check "
        "{security}ssl_ca_file (and ssl_use_system_ca)"
    ),
    ConnectCause.TLS_HOSTNAME: (
        "TLS handshake failed: the Kafka certificate does not name the host connected to: check "
        "{bootstrap} against the certificate's names (ssl_check_hostname)"
    ),
    ConnectCause.TLS_EXPIRED: (
        "TLS handshake failed: a certificate has expired or is not yet valid: renew the "
        "Kafka certificate or {security}ssl_cert_file, check the clock"
    ),
    ConnectCause.TLS_HANDSHAKE: (
        "TLS handshake failed or the listener closed the connection: check "
        "{security}security_protocol matches the listener, and ssl_cert_file / "
        "ssl_key_file if it requires a client certificate"
    ),
    ConnectCause.TOPIC_AUTHORIZATION: (
        "Kafka refused access to a topic (ACL): grant this principal the operation on the "
        "topic (see docs/operations.md, ACLs), or check kafka.*_topic names"
    ),
    ConnectCause.GROUP_AUTHORIZATION: (
        "Kafka refused access to a consumer group (ACL): grant READ on the group "
        "(see docs/operations.md, ACLs)"
    ),
    ConnectCause.CLUSTER_AUTHORIZATION: (
        "Kafka refused a cluster operation (ACL): grant it on the cluster, or use an "
        "existing topic instead of creating one"
    ),
    ConnectCause.UNREACHABLE: (
        "Kafka is unreachable: check {bootstrap}, the network, and that "
        "{security}security_protocol matches the listener"
    ),
    ConnectCause.TIMEOUT: "Kafka did not answer in time: check {bootstrap} and load",
    ConnectCause.OTHER: "Kafka error",
}

#: Causes an operator must fix (settings, certificates, ACLs); retrying alone will not help.
SECURITY_CAUSES = frozenset(_ADVICE) - {
    ConnectCause.UNREACHABLE,
    ConnectCause.TIMEOUT,
    ConnectCause.OTHER,
}


@dataclass(frozen=True)
class Diagnosis:
    cause: ConnectCause
    detail: str  # the client's own reason text (never a secret)

    @property
    def summary(self) -> str:
        """One line: the advice (naming the broker setting to fix), then the client's reason."""
        return self.summary_for("kafka.security.", "kafka.bootstrap_servers")

    def summary_for(self, security_prefix: str, bootstrap_setting: str) -> str:
        """:attr:`summary` naming settings as another settings model spells them (the consumer
        library: ``security.``, ``bootstrap_servers``)."""
        advice = _ADVICE[self.cause].format(security=security_prefix, bootstrap=bootstrap_setting)
        return f"{advice} ({self.detail})" if self.detail else advice


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def capture_aiokafka_errors() -> Iterator[list[str]]:
    """Collect the WARNING+ messages of the ``aiokafka`` loggers while the block runs."""
    collector = _Collector()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(collector)
    try:
        yield collector.lines
    finally:
        logger.removeHandler(collector)


def _from_text(text: str) -> ConnectCause | None:
    lowered = text.lower()
    if "saslauthenticationfailed" in lowered or "authentication failed" in lowered:
        return ConnectCause.AUTHENTICATION
    if "unsupportedsaslmechanism" in lowered:
        return ConnectCause.SASL_MECHANISM
    if "hostname mismatch" in lowered or "doesn't match" in lowered:
        return ConnectCause.TLS_HOSTNAME
    if "certificate has expired" in lowered or "not yet valid" in lowered:
        return ConnectCause.TLS_EXPIRED
    if (
        "self-signed certificate" in lowered
        or "self signed certificate" in lowered
        or "unable to get local issuer" in lowered
        or "unknown ca" in lowered
    ):
        return ConnectCause.TLS_UNKNOWN_CA
    if "certificate" in lowered or "[ssl" in lowered or "handshake" in lowered:
        return ConnectCause.TLS_HANDSHAKE
    return None


def _line_cause(line: str) -> ConnectCause | None:
    """The cause one logged line shows; a connection Kafka closed is a TLS refusal candidate."""
    cause = _from_text(line)
    if cause is None and "closed" in line.lower():
        return ConnectCause.TLS_HANDSHAKE
    return cause


def _relevant_line(lines: list[str]) -> str:
    for line in lines:
        if _from_text(line) is not None:
            return line
    return lines[-1] if lines else ""


def access_error(
    exc: BaseException, log_lines: list[str] | None = None, cert_file: Path | None = None
) -> KafkaAccessError | None:
    """A :class:`KafkaAccessError` when ``exc`` is a refusal an operator must fix (credentials,
    TLS, ACL: :data:`SECURITY_CAUSES`), else None (transient: retry). ``cert_file``: the client
    certificate presented (see :func:`diagnose`)."""
    diagnosis = diagnose(exc, log_lines, cert_file)
    if diagnosis.cause not in SECURITY_CAUSES:
        return None
    return KafkaAccessError(diagnosis.cause.value, diagnosis.summary)


_CREDENTIAL_CAUSES = frozenset({ConnectCause.AUTHENTICATION, ConnectCause.SASL_MECHANISM})


def refusal_in(log_lines: list[str], cert_file: Path | None = None) -> KafkaAccessError | None:
    """A :class:`KafkaAccessError` when aiokafka's captured log lines show Kafka refusing the
    client for good while it retries without raising (a running consumer reconnecting), else
    None: the SASL credentials refused (``SaslAuthenticationFailed``: the password changed), or a
    TLS connection closed while the client certificate in ``cert_file`` is outside its validity
    window (it expired while the client ran; see :func:`with_client_certificate`). Other TLS
    lines are not taken as final: a listener restarting can close a handshake."""
    line = next((x for x in log_lines if _from_text(x) in _CREDENTIAL_CAUSES), "")
    cause = _from_text(line)
    if cause is not None:
        return KafkaAccessError(cause.value, Diagnosis(cause, line).summary)
    closed = next((x for x in log_lines if _line_cause(x) is ConnectCause.TLS_HANDSHAKE), None)
    if closed is None:
        return None
    diagnosis = with_client_certificate(Diagnosis(ConnectCause.TLS_HANDSHAKE, closed), cert_file)
    if diagnosis.cause is ConnectCause.TLS_HANDSHAKE:
        return None
    return KafkaAccessError(diagnosis.cause.value, diagnosis.summary)


def read_refusal(
    exc: BaseException | None,
    log_lines: list[str],
    cert_file: Path | None = None,
    metrics: BrokerMetrics | None = None,
) -> KafkaAccessError | None:
    """The check a running consumer's read loop makes after each fetch: the
    :class:`KafkaAccessError` to raise when Kafka refuses this client for good, else None (retry).
    ``exc``: what the fetch raised (:func:`access_error`), or None when it returned and only
    aiokafka's ``log_lines`` may show a refusal (:func:`refusal_in`). ``cert_file``: the client
    certificate presented. Clears ``log_lines`` (each fetch is judged on its own lines) and counts
    a refusal in ``mdm_broker_kafka_connect_errors_total{cause}`` when ``metrics`` is given."""
    refused = (
        access_error(exc, log_lines, cert_file)
        if exc is not None
        else refusal_in(log_lines, cert_file)
    )
    log_lines.clear()
    if refused is not None and metrics is not None:
        metrics.kafka_connect_errors.labels(refused.cause).inc()
    return refused


async def start_client(client: Any, cert_file: Path | None = None) -> None:
    """``await client.start()`` for an aiokafka client (consumer, admin). A first connection Kafka
    refuses for good (credentials, TLS, ACL: :data:`SECURITY_CAUSES`) raises
    :class:`KafkaAccessError` diagnosed from aiokafka's log lines, as the producer's is (its
    ``KafkaConnectionError("Unable to bootstrap ...")`` alone does not say why); any other error
    propagates unchanged. ``cert_file``: the client certificate presented (see
    :func:`with_client_certificate`)."""
    with capture_aiokafka_errors() as lines:
        try:
            await client.start()
        except kafka_errors.KafkaError as exc:
            refused = access_error(exc, lines, cert_file)
            if refused is None:
                raise
            raise refused from exc


async def stop_client(consumer: Any) -> None:
    """``await consumer.stop()`` for an aiokafka consumer, finished even when aiokafka 0.14 ends
    it early. Its fetcher's ``close()`` cancels each pending fetch task and awaits it; a task that
    was backing off after a failed fetch (Kafka unreachable or refusing) re-raises that
    ``CancelledError`` out of ``stop()``, before the other fetch tasks are cancelled and before
    the client's connections are closed. The same happens when the calling task is cancelled
    during ``stop()`` (or is cleaning up after a cancellation). Either way the rest of the close
    is done here, so no connection or fetch task is left behind; then a cancellation of the
    calling task propagates, aiokafka's own does not."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        fetcher = getattr(consumer, "_fetcher", None)
        tasks = [getattr(fetcher, "_fetch_task", None), *getattr(fetcher, "_pending_tasks", ())]
        unfinished = [t for t in tasks if isinstance(t, asyncio.Future) and not t.done()]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        await consumer._client.close()
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


def diagnose(
    exc: BaseException,
    log_lines: list[str] | None = None,
    cert_file: Path | None = None,
    cert_setting: str = "kafka.security.ssl_cert_file",
) -> Diagnosis:
    """Classify ``exc`` (with the aiokafka log lines captured around it) into a Diagnosis.
    ``cert_file``: the client certificate presented (mutual TLS), named ``cert_setting`` in the
    summary when Kafka closed the connection because it is out of its validity window (see
    :func:`with_client_certificate`)."""
    return with_client_certificate(_classify(exc, log_lines or []), cert_file, cert_setting)


def _classify(exc: BaseException, lines: list[str]) -> Diagnosis:
    if isinstance(exc, kafka_errors.TopicAuthorizationFailedError):
        return Diagnosis(ConnectCause.TOPIC_AUTHORIZATION, str(exc))
    if isinstance(exc, kafka_errors.GroupAuthorizationFailedError):
        return Diagnosis(ConnectCause.GROUP_AUTHORIZATION, str(exc))
    if isinstance(exc, kafka_errors.ClusterAuthorizationFailedError):
        return Diagnosis(ConnectCause.CLUSTER_AUTHORIZATION, str(exc))
    if isinstance(exc, kafka_errors.SaslAuthenticationFailed):
        return Diagnosis(ConnectCause.AUTHENTICATION, str(exc))
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError):
        return Diagnosis(ConnectCause.SASL_MECHANISM, str(exc))
    if isinstance(exc, ssl.SSLError):
        return Diagnosis(_from_text(str(exc)) or ConnectCause.TLS_HANDSHAKE, str(exc))
    if isinstance(exc, TimeoutError | kafka_errors.KafkaTimeoutError):
        line = _relevant_line(lines)
        return Diagnosis(_from_text(line) or ConnectCause.TIMEOUT, line)
    if isinstance(exc, kafka_errors.KafkaConnectionError | OSError):
        line = _relevant_line(lines)
        cause = _from_text(line) or _from_text(str(exc))
        if cause is None and "closed" in line.lower():
            cause = ConnectCause.TLS_HANDSHAKE
        return Diagnosis(cause or ConnectCause.UNREACHABLE, line or str(exc))
    return Diagnosis(ConnectCause.OTHER, f"{type(exc).__name__}: {exc}")


def with_client_certificate(
    diagnosis: Diagnosis,
    cert_file: Path | None,
    setting: str = "kafka.security.ssl_cert_file",
    now: datetime.datetime | None = None,
) -> Diagnosis:
    """``diagnosis``, or :attr:`ConnectCause.TLS_EXPIRED` naming ``setting`` when Kafka closed the
    TLS connection (:attr:`ConnectCause.TLS_HANDSHAKE`) and the client certificate in
    ``cert_file`` (its first PEM certificate) is outside its validity window. Kafka refuses such
    a certificate by closing the connection, and aiokafka then reports only ``Connection ...
    closed``: the certificate we present is the one thing we can check ourselves. Needs the
    ``cryptography`` package (the broker's ``server`` extra); without it, or when the file
    cannot be read, ``diagnosis`` is returned unchanged."""
    if diagnosis.cause is not ConnectCause.TLS_HANDSHAKE or cert_file is None:
        return diagnosis
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (ImportError, OSError, ValueError):
        return diagnosis
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        problem = f"expired at {end:%Y-%m-%d %H:%M} UTC"
    elif now < start:
        problem = f"is not valid before {start:%Y-%m-%d %H:%M} UTC"
    else:
        return diagnosis
    return Diagnosis(
        ConnectCause.TLS_EXPIRED,
        f"the client certificate {setting} {problem}; Kafka closed the connection: "
        f"{diagnosis.detail}",
    )
