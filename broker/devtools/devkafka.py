"""Run a real Apache Kafka (KRaft, combined broker+controller) from Maven Central jars, no Docker.

Used by the test fixture, ``mdm-broker dev`` and the benchmarks, so all three run the same broker.

* :func:`ensure_kafka_libs` resolves ``org.apache.kafka:kafka_2.13`` (version pinned in
  ``broker/devtools/kafka/pom.xml``) plus its logging binding into a cache folder with Maven, once. Later
  calls find the folder complete and return at once.
* :class:`KafkaCluster` formats fresh storage in a temporary folder and starts 1 or 3 nodes on free
  loopback ports, waits until every node answers a Kafka ``ApiVersions`` request, and stops every
  JVM it started (SIGTERM, then SIGKILL after a grace period), so no process is left behind.
* With ``secure=SecureListeners(...)`` a single node serves a ``SASL_SSL`` listener (SCRAM-SHA-512,
  users bootstrapped with ``StorageTool format --add-scram``) and a mutual-TLS listener instead of
  PLAINTEXT, with certificates from a throwaway CA (:mod:`broker.devtools.devcerts`) and, by default,
  ``StandardAuthorizer`` with the first SCRAM user as super user. :meth:`KafkaCluster.scram_security`
  and :meth:`KafkaCluster.mtls_security` give the client settings for them.

Command line: ``python -m broker.devtools.devkafka fetch`` (download jars) or
``python -m broker.devtools.devkafka run`` (start a single node and print its bootstrap address until Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

from broker.devtools.devcerts import CertFiles, CertValidity, DevCA, principal_of
from broker.errors import BrokerError
from broker.kafka_security import KafkaSecurity
from broker.signals import install_stop_signals

#: Kafka release the launcher runs. Must match ``kafka.version`` in broker/devtools/kafka/pom.xml.
KAFKA_VERSION = "4.3.1"

#: The Maven pom and log4j2 config ship inside the package (package data), so the launcher works
#: from an installed wheel; deploy/kafka/ holds links to them for readers of the repository.
_KAFKA_DATA = resources.files("broker.devtools") / "kafka"
_POM = Path(str(_KAFKA_DATA / "pom.xml"))
_LOG4J2_CONFIG = Path(str(_KAFKA_DATA / "log4j2.properties"))
_ALTER_SCRAM_SOURCE = Path(str(_KAFKA_DATA / "AlterScramPassword.java"))
_COMPLETE_MARKER = ".complete"

log = logging.getLogger(__name__)


class KafkaLauncherError(BrokerError):
    """The local Kafka could not be fetched, formatted or started; the message says which step."""


def cache_dir() -> Path:
    """Folder holding downloaded jars; ``MDM_BROKER_CACHE_DIR`` overrides ``~/.cache/mdm-broker``."""
    base = os.environ.get("MDM_BROKER_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "mdm-broker"


def ensure_kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """Return the folder of Kafka runtime jars, downloading them with Maven on first use.

    Raises :class:`KafkaLauncherError` when Maven is missing or the resolution fails. A partial
    download is never mistaken for a complete one (a marker file is written last).
    """
    libs = cache_dir() / f"kafka-{version}" / "libs"
    if (libs / _COMPLETE_MARKER).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLauncherError("Maven (mvn) is required to fetch the Kafka jars; install it")
    if shutil.which("java") is None:
        raise KafkaLauncherError("Java 17+ is required to run Kafka; install a JDK")
    libs.mkdir(parents=True, exist_ok=True)
    # Maven writes target/ beside the pom: build from a copy in the cache, never in site-packages.
    build_dir = libs.parent / "build"
    build_dir.mkdir(exist_ok=True)
    pom = build_dir / "pom.xml"
    shutil.copyfile(_POM, pom)
    print(
        f"fetching Apache Kafka {version} jars from Maven Central into {libs} ...", file=sys.stderr
    )
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "package",
        f"-Dkafka.version={version}",
        f"-Dkafka.libs.dir={libs}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaLauncherError(
            f"mvn failed ({proc.returncode}) resolving Kafka {version}:\n{proc.stdout}{proc.stderr}"
        )
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaLauncherError(f"Maven finished but no kafka_2.13 jar is in {libs}")
    (libs / _COMPLETE_MARKER).write_text(version)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def kafka_answers(
    host: str, port: int, timeout_s: float = 1.0, tls_ca_file: Path | None = None
) -> bool:
    """True when a Kafka broker at host:port answers an ApiVersions (v0) request.

    A bare TCP connect is not enough: the socket accepts before the broker can serve requests.
    With ``tls_ca_file`` the probe speaks TLS (a SASL_SSL listener answers ApiVersions before
    authentication, so no credentials are needed).
    """
    request_body = struct.pack(">hhih", 18, 0, 1, len(b"probe")) + b"probe"
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout_s))
            if tls_ca_file is not None:
                context = ssl.create_default_context(cafile=str(tls_ca_file))
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname=host))
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(request_body)) + request_body)
            header = sock.recv(4)
            if len(header) < 4:
                return False
            (size,) = struct.unpack(">i", header)
            payload = b""
            while len(payload) < size:
                chunk = sock.recv(size - len(payload))
                if not chunk:
                    return False
                payload += chunk
            # correlation id (4) + error code (2): 0 means the broker is serving requests.
            return len(payload) >= 6 and struct.unpack(">h", payload[4:6])[0] == 0
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class SecureListeners:
    """A secured single node: SASL_SSL/SCRAM-SHA-512 + mutual TLS, optionally with ACLs.

    ``scram_users`` maps user name to password; the FIRST user is the inter-broker identity and,
    with ``authorizer``, the super user (``User:ANONYMOUS`` is also super: the node's own
    connection to its loopback-only PLAINTEXT controller listener). Client certificates are issued
    for ``client_names`` (principal ``User:CN=<name>,O=mdm-test``). ``unsecured_oauthbearer``
    also enables OAUTHBEARER on the SASL_SSL listener with Kafka's unsecured (unsigned) token
    validator, for tests of token providers; the principal is the token's ``sub``.

    For tests of what clients report when the node's certificate is bad: ``mtls_server_validity``
    issues the mutual-TLS listener's certificate expired or not yet valid, and ``tls_listener``
    adds a listener ``TLS`` (SSL, no client certificate) serving one of that validity. The
    SASL_SSL listener's stays valid: it is the inter-broker listener, and Kafka refuses to start
    when that one's certificate fails its own truststore.
    """

    scram_users: dict[str, str] = field(default_factory=lambda: {"admin": "admin-secret"})
    authorizer: bool = True
    client_names: tuple[str, ...] = ("mdm-client",)
    unsecured_oauthbearer: bool = False
    mtls_server_validity: CertValidity = "valid"
    tls_listener: CertValidity | None = None


@dataclass
class DevPki:
    """Files of the throwaway PKI of a secured node (see :mod:`broker.devtools.devcerts`)."""

    ca: DevCA
    server: CertFiles
    clients: dict[str, CertFiles]
    mtls_server: CertFiles
    tls_server: CertFiles | None


@dataclass
class _Node:
    node_id: int
    client_port: int
    controller_port: int
    data_dir: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    mtls_port: int = 0
    tls_port: int = 0


@dataclass
class KafkaCluster:
    """A local KRaft cluster of ``nodes`` combined broker+controller JVMs on loopback.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. ``stop`` is idempotent and
    always reaps every JVM it started; the temporary folder is removed unless ``keep_dir`` is set.
    """

    nodes: int = 1
    heap_mb: int = 512
    start_timeout_s: float = 90.0
    version: str = KAFKA_VERSION
    keep_dir: bool = False
    secure: SecureListeners | None = None
    auto_create_topics: bool = True
    """Kafka's ``auto.create.topics.enable``; tests of the broker's topic check turn it off."""
    _nodes: list[_Node] = field(default_factory=list, init=False)
    _workdir: Path | None = field(default=None, init=False)
    _pki: DevPki | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of every node's client (or SASL_SSL) listener."""
        return ",".join(f"127.0.0.1:{n.client_port}" for n in self._nodes)

    @property
    def mtls_bootstrap_servers(self) -> str:
        """The mutual-TLS listener of a secured node."""
        return ",".join(f"127.0.0.1:{n.mtls_port}" for n in self._nodes)

    @property
    def tls_bootstrap_servers(self) -> str:
        """The TLS (server certificate only) listener of ``SecureListeners(tls_listener=...)``."""
        return ",".join(f"127.0.0.1:{n.tls_port}" for n in self._nodes)

    @property
    def pki(self) -> DevPki:
        if self._pki is None:
            raise KafkaLauncherError("cluster is not secured or not started")
        return self._pki

    def scram_security(self, user: str, password: str | None = None) -> KafkaSecurity:
        """Client settings for the SASL_SSL listener as ``user`` (password from the launcher
        unless given, e.g. a wrong one)."""
        if self.secure is None:
            raise KafkaLauncherError("cluster is not secured")
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=password if password is not None else self.secure.scram_users[user],
            ssl_ca_file=self.pki.ca.ca_file,
            ssl_use_system_ca=False,
        )

    def mtls_security(self, client: str = "mdm-client") -> KafkaSecurity:
        """Client settings for the mutual-TLS listener with the certificate of ``client``."""
        files = self.pki.clients[client]
        return KafkaSecurity(
            security_protocol="SSL",
            ssl_ca_file=self.pki.ca.ca_file,
            ssl_use_system_ca=False,
            ssl_cert_file=files.cert,
            ssl_key_file=files.key,
        )

    def tls_security(self) -> KafkaSecurity:
        """Client settings for the TLS listener (no client certificate)."""
        return KafkaSecurity(
            security_protocol="SSL", ssl_ca_file=self.pki.ca.ca_file, ssl_use_system_ca=False
        )

    @staticmethod
    def mtls_principal(client: str = "mdm-client") -> str:
        return principal_of(client)

    def set_scram_password(self, user: str, password: str) -> None:
        """Create or change ``user``'s SCRAM-SHA-512 password on the running node.

        aiokafka has no AlterUserScramCredentials call, so this runs the Java Admin API
        (``broker/devtools/kafka/AlterScramPassword.java`` in source-file mode, with the launcher's jars)
        as the super user. Passwords travel in the child's environment, never in its argv.
        """
        if self.secure is None:
            raise KafkaLauncherError("cluster is not secured")
        admin, admin_password = next(iter(self.secure.scram_users.items()))
        libs = ensure_kafka_libs(self.version)
        cmd = [
            "java",
            "-Xmx128m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
            "-cp",
            f"{libs}/*",
            str(_ALTER_SCRAM_SOURCE),
            self.bootstrap_servers,
            str(self.pki.ca.ca_file),
            admin,
            user,
        ]
        env = {
            **os.environ,
            "MDM_SCRAM_ADMIN_PASSWORD": admin_password,
            "MDM_SCRAM_NEW_PASSWORD": password,
        }
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=120, env=env
        )
        if proc.returncode != 0:
            raise KafkaLauncherError(
                f"changing the SCRAM password of {user} failed:\n{proc.stderr}"
            )

    @property
    def pids(self) -> list[int]:
        """Process ids of the running node JVMs (for leak checks)."""
        return [n.process.pid for n in self._nodes if n.process is not None]

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise KafkaLauncherError("cluster not started")
        return self._workdir

    def start(self) -> KafkaCluster:
        """Fetch jars if needed, format storage, start every node and wait until all answer."""
        if self.nodes not in (1, 3):
            raise KafkaLauncherError("nodes must be 1 or 3")
        if self.secure is not None and self.nodes != 1:
            raise KafkaLauncherError("a secured cluster has exactly one node")
        libs = ensure_kafka_libs(self.version)
        self._workdir = Path(tempfile.mkdtemp(prefix="mdm-kafka-"))
        if self.secure is not None:
            ca = DevCA(self._workdir / "certs")
            secure = self.secure

            def server(stem: str, validity: CertValidity) -> CertFiles:
                return ca.issue(stem, "kafka-node", server_names=("127.0.0.1",), validity=validity)

            self._pki = DevPki(
                ca=ca,
                server=server("server", "valid"),
                clients={name: ca.issue(name, name) for name in secure.client_names},
                mtls_server=server("mtls-server", secure.mtls_server_validity),
                tls_server=(
                    server("tls-server", secure.tls_listener)
                    if secure.tls_listener is not None
                    else None
                ),
            )
        cluster_id = random_cluster_id()
        self._nodes = [
            _Node(
                node_id=i + 1,
                client_port=free_port(),
                controller_port=free_port(),
                data_dir=self._workdir / f"node{i + 1}" / "data",
                config_path=self._workdir / f"node{i + 1}" / "server.properties",
                log_path=self._workdir / f"node{i + 1}" / "kafka.log",
                mtls_port=free_port() if self.secure is not None else 0,
                tls_port=free_port() if self.secure and self.secure.tls_listener else 0,
            )
            for i in range(self.nodes)
        ]
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self._nodes)
        try:
            for node in self._nodes:
                node.data_dir.mkdir(parents=True)
                node.config_path.write_text(self._server_properties(node, voters))
                self._format(libs, node, cluster_id)
            for node in self._nodes:
                self._launch(libs, node)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop every node: SIGTERM, wait up to ``grace_s``, then SIGKILL. Safe to call twice."""
        for node in self._nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for node in self._nodes:
            proc = node.process
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            node.process = None
        if self._workdir is not None and not self.keep_dir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def stop_node(self, index: int, hard: bool = False) -> None:
        """Stop one node (SIGKILL when ``hard``), keeping its storage for :meth:`restart_node`."""
        node = self._nodes[index]
        if node.process is None:
            return
        if hard:
            node.process.kill()
        else:
            node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
        node.process = None

    def restart_node(self, index: int) -> None:
        """Start a stopped node again on the same ports and storage; wait until it answers."""
        node = self._nodes[index]
        if node.process is not None:
            return
        self._launch(ensure_kafka_libs(self.version), node)
        self._wait_ready([node])

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _server_properties(self, node: _Node, voters: str) -> str:
        replication = min(3, self.nodes)
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{node.client_port},"
                f"CONTROLLER://127.0.0.1:{node.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.client_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": "1" if self.nodes == 1 else "2",
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": "1" if self.nodes == 1 else "2",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": "1" if self.nodes == 1 else "2",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.dedupe.buffer.size": "33554432",
            "auto.create.topics.enable": "true" if self.auto_create_topics else "false",
        }
        if self.secure is not None:
            lines.update(self._secure_properties(node, self.secure))
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def _secure_properties(self, node: _Node, secure: SecureListeners) -> dict[str, str]:
        pki = self.pki
        admin, admin_password = next(iter(secure.scram_users.items()))
        props = {
            "listeners": (
                f"SASL_SSL://127.0.0.1:{node.client_port},MTLS://127.0.0.1:{node.mtls_port},"
                f"CONTROLLER://127.0.0.1:{node.controller_port}"
            ),
            "advertised.listeners": (
                f"SASL_SSL://127.0.0.1:{node.client_port},MTLS://127.0.0.1:{node.mtls_port}"
            ),
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512"
            + (",OAUTHBEARER" if secure.unsecured_oauthbearer else ""),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{admin}" password="{admin_password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki.server.chain),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca.ca_file),
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.mtls.ssl.keystore.type": "PEM",
            "listener.name.mtls.ssl.keystore.location": str(pki.mtls_server.chain),
        }
        if pki.tls_server is not None:
            tls = f",TLS://127.0.0.1:{node.tls_port}"
            props["listeners"] += tls
            props["advertised.listeners"] += tls
            props["listener.security.protocol.map"] += ",TLS:SSL"
            props["listener.name.tls.ssl.keystore.type"] = "PEM"
            props["listener.name.tls.ssl.keystore.location"] = str(pki.tls_server.chain)
        if secure.unsecured_oauthbearer:
            # Kafka's built-in UNSECURED token validator (no signature check): tests of the
            # OAUTHBEARER token-provider hook only.
            props["listener.name.sasl_ssl.oauthbearer.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                'unsecuredLoginStringClaim_sub="unused";'
            )
        if secure.authorizer:
            props["authorizer.class.name"] = (
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            )
            props["super.users"] = f"User:{admin};User:ANONYMOUS"
            props["allow.everyone.if.no.acl.found"] = "false"
        return props

    def _java_base(self, libs: Path, heap_mb: int) -> list[str]:
        return [
            "java",
            f"-Xms{heap_mb // 2}m",
            f"-Xmx{heap_mb}m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            f"{libs}/*",
        ]

    def _format(self, libs: Path, node: _Node, cluster_id: str) -> None:
        cmd = [
            *self._java_base(libs, 256),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(node.config_path),
        ]
        if self.secure is not None:
            for user, password in self.secure.scram_users.items():
                cmd += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise KafkaLauncherError(
                f"formatting node {node.node_id} failed:\n{proc.stdout}{proc.stderr}"
            )

    def _launch(self, libs: Path, node: _Node) -> None:
        cmd = [*self._java_base(libs, self.heap_mb), "kafka.Kafka", str(node.config_path)]
        with node.log_path.open("ab") as logfile:
            # start_new_session: a Ctrl-C in the terminal reaches our process only, and we stop
            # the JVM ourselves in order (SIGTERM, wait, SIGKILL).
            node.process = subprocess.Popen(
                cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait_ready(self, nodes: list[_Node] | None = None) -> None:
        pending = list(nodes if nodes is not None else self._nodes)
        deadline = time.monotonic() + self.start_timeout_s
        while pending:
            for node in list(pending):
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaLauncherError(
                        f"Kafka node {node.node_id} exited with {node.process.returncode}; "
                        f"log tail:\n{_tail(node.log_path)}"
                    )
                ca = self._pki.ca.ca_file if self._pki is not None else None
                if kafka_answers("127.0.0.1", node.client_port, tls_ca_file=ca):
                    pending.remove(node)
            if not pending:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(_tail(n.log_path) for n in pending)
                raise KafkaLauncherError(
                    f"Kafka not ready after {self.start_timeout_s:.0f}s; log tail:\n{tails}"
                )
            time.sleep(0.2)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def running_kafka(nodes: int = 1) -> Iterator[KafkaCluster]:
    """Context manager: a started :class:`KafkaCluster`, stopped on exit."""
    cluster = KafkaCluster(nodes=nodes)
    with cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broker.devtools.devkafka",
        description="Fetch Apache Kafka jars from Maven Central and run a local KRaft broker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the Kafka jars into the cache and exit")
    run = sub.add_parser("run", help="start a local cluster and keep it up until Ctrl-C")
    run.add_argument("--nodes", type=int, choices=(1, 3), default=1)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(ensure_kafka_libs())
        return 0
    asyncio.run(_serve(args.nodes))
    return 0


async def _serve(nodes: int) -> None:
    """Run a cluster until SIGINT/SIGTERM; the JVMs are always stopped before returning."""
    stop = asyncio.Event()
    install_stop_signals(asyncio.get_running_loop(), stop, second_signal_exits=False)
    cluster = await asyncio.to_thread(KafkaCluster(nodes=nodes).start)
    try:
        print(f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}", flush=True)
        await stop.wait()
    finally:
        await asyncio.to_thread(cluster.stop)


if __name__ == "__main__":
    raise SystemExit(main())
