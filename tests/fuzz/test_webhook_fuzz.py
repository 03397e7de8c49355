"""Hypothesis fuzzing of the Apple webhook against a real Kafka.

One broker (webhook + publisher) runs for the whole test in a background thread; hypothesis posts
inputs to it over HTTP: mutated seed notifications (wrong types, huge integers, unknown keys and
types, odd results, reused ids), arbitrary JSON, arbitrary bytes, deep nesting, and requests with
a wrong or missing token. Then the topics are read back. Properties:

* no answer but 200 (authenticated) or 401 (not): no 5xx at all while Kafka is up;
* every authenticated input is accounted for: ``accepted`` + ``duplicate`` + ``dead_lettered``;
  the events topic holds exactly the accepted ids (one record each) and the DLQ exactly as many
  records as ``dead_lettered`` answers;
* every record on the events topic is a valid canonical event (our model, its typed ``data``,
  and the CloudEvents SDK).

Examples: ``FUZZ_EXAMPLES`` (default 150, a few seconds in CI); ``make fuzz`` runs 1,000,000.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from cloudevents.kafka import KafkaMessage, from_structured
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.app.config import BrokerSettings
from broker.app.registry import factories
from broker.app.runtime import BrokerApp
from broker.events import decode_event
from tests.e2e.apple.helpers import TOKEN, read_until, webhook_settings
from tests.unit.apple.seeds import SEED_EXAMPLES

pytestmark = pytest.mark.kafka

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
PATH = "/apple/acme/notifications"

_BASES: list[dict[str, Any]] = [copy.deepcopy(example) for example, _, _ in SEED_EXAMPLES]
_KEYS = [
    "notification",
    "notificationId",
    "notificationType",
    "uId",
    "type",
    "result",
    "eventId",
    "error",
    "assignments",
    "users",
    "associatedUsers",
    "adamId",
    "countDelta",
    "pricingParam",
    "x",
]
_TYPES = [
    "ASSET_COUNT",
    "ASSET_MANAGEMENT",
    "USER_MANAGEMENT",
    "USER_ASSOCIATED",
    "TEST_NOTIFICATION",
    "SUBSCRIPTION_COUNT",
    "UNLIMITED_ASSET",
    "",
]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["SUCCESS", "FAILURE", "ASSOCIATE", "RETIRE", *_TYPES])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    doc = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(0, 3))):
        target = (
            doc
            if draw(st.booleans()) or not isinstance(doc.get("notification"), dict)
            else doc["notification"]
        )
        key = draw(st.sampled_from(_KEYS))
        action = draw(st.sampled_from(["set", "delete", "type", "result"]))
        if action == "delete":
            target.pop(key, None)
        elif action == "type":
            doc["notificationType"] = draw(st.sampled_from(_TYPES))
        elif action == "result" and isinstance(doc.get("notification"), dict):
            doc["notification"]["result"] = draw(st.sampled_from(["SUCCESS", "FAILURE", "PARTIAL"]))
        else:
            target[key] = draw(_json)
    indent = draw(st.sampled_from([None, 2]))
    return json.dumps(doc, indent=indent, ensure_ascii=draw(st.booleans())).encode()  # fmt: skip


def _nested(depth: int) -> bytes:
    return b'{"notificationId":"n","notificationType":"X","uId":"1","notification":' + (
        b"[" * depth + b"]" * depth + b"}"
    )


_bodies = (
    _mutated()
    | _json.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | st.integers(1, 1500).map(_nested)
)
_auth = st.sampled_from([f"Bearer {TOKEN}"] * 6 + ["Bearer wrong-token", "", "Basic x"])


@dataclass
class Ledger:
    unauthenticated: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    accepted_ids: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)


class ThreadedBroker:
    """A BrokerApp with the Apple webhook, on its own event loop in a background thread."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app = BrokerApp(settings, factories=factories(settings, ["apple"]))

    def __enter__(self) -> ThreadedBroker:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.app.start(), self.loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()


@pytest.fixture
def fuzz_broker(broker_settings: BrokerSettings) -> Iterator[ThreadedBroker]:
    settings = BrokerSettings(
        kafka=broker_settings.kafka,
        http={"host": "127.0.0.1", "port": 0},
        apple=webhook_settings({"acme": None}),
    )
    with ThreadedBroker(settings) as broker:
        yield broker


def test_webhook_fuzz_against_real_kafka(fuzz_broker: ThreadedBroker) -> None:
    host, port = fuzz_broker.app.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    ledger = Ledger()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=_bodies, auth=_auth)
    # always tried, whatever the example budget: edges that once answered 500
    @example(body=b"", auth=f"Bearer {TOKEN}")
    @example(body=b" ", auth=f"Bearer {TOKEN}")
    @example(body=b"{}", auth=f"Bearer {TOKEN}")
    def post_one(body: bytes, auth: str) -> None:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        conn.request("POST", PATH, body=body, headers=headers)
        resp = conn.getresponse()
        answer = orjson.loads(resp.read())
        ledger.statuses[resp.status] += 1
        if auth != f"Bearer {TOKEN}":
            assert resp.status == 401, answer
            ledger.unauthenticated += 1
            return
        assert resp.status == 200, (resp.status, answer, body[:300])
        assert answer["status"] in ("accepted", "duplicate", "dead_lettered"), answer
        ledger.answers[answer["status"]] += 1
        if answer["status"] == "accepted":
            ledger.accepted_ids[answer["id"]] += 1

    try:
        post_one()
    finally:
        conn.close()

    kafka = fuzz_broker.app.settings.kafka
    accepted = sum(ledger.accepted_ids.values())
    dead = ledger.answers["dead_lettered"]
    events = asyncio.run(
        read_until(kafka.bootstrap_servers, kafka.events_topic, lambda r: len(r) >= accepted)
    )
    dlq = asyncio.run(
        read_until(kafka.bootstrap_servers, kafka.dlq_topic, lambda r: len(r) >= dead)
    )

    assert set(ledger.statuses) <= {200, 401}, ledger.statuses
    assert ledger.answers["accepted"] > 0, ledger  # the run exercised both outcomes
    assert dead > 0, ledger
    assert Counter(decode_event(r.value).id for r in events) == ledger.accepted_ids
    assert len(dlq) == dead
    for record in events:
        event = decode_event(record.value)
        event.typed_data()
        sdk = from_structured(KafkaMessage(headers={}, key=record.key, value=record.value))
        assert sdk["id"] == event.id
        assert record.key == event.partitionkey.encode()
