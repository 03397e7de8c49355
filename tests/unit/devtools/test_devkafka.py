"""The local Kafka launcher's pure helpers (the launcher itself runs in every Kafka test)."""

from __future__ import annotations

import base64
import socket

from broker.devtools.devkafka import free_port, kafka_answers, random_cluster_id


def test_cluster_id_is_16_bytes_base64url_not_starting_with_dash() -> None:
    for _ in range(200):
        value = random_cluster_id()
        assert len(value) == 22
        assert not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


def test_kafka_answers_is_false_for_a_silent_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not kafka_answers("127.0.0.1", port, timeout_s=0.3)
    assert not kafka_answers("127.0.0.1", free_port(), timeout_s=0.3)
