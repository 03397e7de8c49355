"""Every aiokafka client the project constructs gets ``**client_kwargs(...)`` (TLS/SASL).

A client built without it could only reach a PLAINTEXT Kafka: this fails the build instead of a
production deployment.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def _constructions() -> list[tuple[str, ast.Call]]:
    found = []
    for folder in ("broker", "adapters", "simulators"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    if name in CLIENTS:
                        found.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return found


def _secured(call: ast.Call) -> bool:
    for keyword in call.keywords:
        value = keyword.value
        if keyword.arg is None and isinstance(value, ast.Call):
            name = getattr(value.func, "id", None) or getattr(value.func, "attr", None)
            if name == "client_kwargs":
                return True
        if keyword.arg is None and isinstance(value, ast.Name):
            return True  # kwargs built by client_kwargs and passed on (e.g. kafka_access)
    return False


def test_every_kafka_client_construction_passes_client_kwargs() -> None:
    constructions = _constructions()
    assert len(constructions) >= 10  # producer, admin, state, shard, watch, tail, consumer, dlq...
    unsecured = [where for where, call in constructions if not _secured(call)]
    assert not unsecured, f"Kafka clients without **client_kwargs(...): {unsecured}"
