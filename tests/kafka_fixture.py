"""Where the tests' real Kafka comes from (DESIGN.md section 8), in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment (an existing broker);
2. testcontainers with the ``apache/kafka`` image, when a Docker engine answers;
3. the project's launcher (broker.devtools.devkafka): Kafka jars from Maven Central, KRaft on loopback.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from broker.devtools.devkafka import KAFKA_VERSION, KafkaCluster, free_port, kafka_answers


def docker_engine_answers() -> bool:
    """True when a Docker engine answers ``GET /_ping`` (plain socket; the docker SDK leaks one)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(host.removeprefix("unix://"))
                sock.sendall(request)
                return b" 200 " in sock.recv(64)
        if host.startswith("tcp://"):
            hostname, _, port = host.removeprefix("tcp://").rpartition(":")
            with socket.create_connection((hostname, int(port)), timeout=2) as sock:
                sock.sendall(request)
                return b" 200 " in sock.recv(64)
    except OSError:
        return False
    return False


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = (
        DockerContainer(f"apache/kafka:{KAFKA_VERSION}")
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with container:
        import time

        deadline = time.monotonic() + 90
        while not kafka_answers("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise RuntimeError("apache/kafka container did not become ready in 90s")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def session_kafka() -> Iterator[str]:
    """Yield a bootstrap address of a real Kafka broker for the whole test session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
    elif docker_engine_answers():
        with _testcontainers_kafka() as bootstrap:
            yield bootstrap
    else:
        with KafkaCluster(nodes=1) as cluster:
            yield cluster.bootstrap_servers
