"""Every Apple seed example, posted VERBATIM through the real webhook into a real Kafka.

The 15 example notifications of the two Apple seed documents (10 in the "Subscribing to
Notifications" article, 5 in the WWDC21 session) are posted as printed, ids included; only the
``...`` placeholders are removed (tests/unit/apple/seeds.py). What comes out, per example:

* the 13 complete ones: 13 events with 13 distinct ids. Six reuse an id already published with
  other content (the article's USER_MANAGEMENT update and retire share the create's id; the session
  reuses four of the article's ids with other content), so they are published under
  ``{id}~{16 hex}`` with ``idcollision`` and counted;
* the article's generic format (``"notification": {...}``) and the session's 13:24 example (its
  envelope is elided): dead-lettered as ``schema`` violations, answered 2xx;
* posting all 15 again adds no new id (13 duplicates, 2 more dead letters).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from cloudevents.kafka import KafkaMessage, from_structured

from broker.app.config import BrokerSettings
from broker.idwindow import collision_id, content_digest
from tests.e2e.apple.helpers import (
    TENANT,
    TOKEN,
    Record,
    events_of,
    has_id,
    notification_url,
    read_until,
    running_broker,
    sample,
    webhook_settings,
)
from tests.unit.apple.seeds import SEED_DIR, SEED_SHA256, UID, SeedExample, seed_examples

pytestmark = pytest.mark.kafka

PUBLISHED, COLLISION, SCHEMA = "published", "id_collision", "schema"

# (document, where, answer status, reason, canonical type): one row per example, document order.
EXPECTED: list[tuple[str, str, str, str, str | None]] = [
    ("000", "Overview", "dead_lettered", SCHEMA, None),  # generic format: body elided
    ("000", "Overview", "accepted", PUBLISHED, "mdm.test"),
    ("000", "Update Asset Counts", "accepted", PUBLISHED, "mdm.asset.count_changed"),
    ("000", "Track Assignments", "accepted", PUBLISHED, "mdm.assignment.associated"),
    ("000", "Track Assignments", "accepted", PUBLISHED, "mdm.assignment.disassociated"),
    ("000", "Track Assignments", "accepted", PUBLISHED, "mdm.assignment.revoked"),
    ("000", "Track User Events", "accepted", PUBLISHED, "mdm.user.created"),
    ("000", "Track User Events", "accepted", COLLISION, "mdm.user.updated"),  # create's id
    ("000", "Track User Events", "accepted", COLLISION, "mdm.user.retired"),  # create's id
    ("000", "Track User Associations", "accepted", PUBLISHED, "mdm.user.associated"),
    (
        "004",
        "2:43 Asset Management Notification",
        "accepted",
        COLLISION,
        "mdm.assignment.associated",
    ),
    ("004", "5:09 Asset Count Notification", "accepted", COLLISION, "mdm.asset.count_changed"),
    ("004", "7:49 User Management Notification", "accepted", COLLISION, "mdm.user.updated"),
    ("004", "8:33 User Associated Notification", "accepted", COLLISION, "mdm.user.associated"),
    ("004", "13:24 Asset Management Notification", "dead_lettered", SCHEMA, None),  # no envelope
]


def test_the_seed_copies_are_the_documents_unchanged() -> None:
    import hashlib

    for name, digest in SEED_SHA256.items():
        assert hashlib.sha256((SEED_DIR / name).read_bytes()).hexdigest() == digest
    examples = seed_examples()
    assert [(e.document[:3], e.where) for e in examples] == [row[:2] for row in EXPECTED]
    assert sum(e.complete for e in examples) == 13


def _expected_id(example: SeedExample, reason: str) -> str:
    nid = str(example.parsed()["notificationId"])
    return collision_id(nid, content_digest(example.body)) if reason == COLLISION else nid


async def test_every_seed_example_verbatim_through_webhook_and_kafka(
    broker_settings: BrokerSettings,
) -> None:
    examples = seed_examples()
    async with (
        running_broker(broker_settings, webhook_settings({TENANT: UID})) as app,
        aiohttp.ClientSession() as http,
    ):
        url = notification_url(app, TENANT)

        async def post(body: bytes) -> tuple[int, dict[str, Any]]:
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            async with http.post(url, data=body, headers=headers) as resp:
                return resp.status, orjson.loads(await resp.read())

        first = [await post(example.body) for example in examples]
        second = [await post(example.body) for example in examples]
        marker_body = orjson.dumps(
            {
                "notification": {"adamId": "1", "countDelta": 1},
                "notificationId": "marker-after-seeds",
                "notificationType": "ASSET_COUNT",
                "uId": UID,
            }
        )
        assert (await post(marker_body))[0] == 200
        kafka = app.settings.kafka
        records = await read_until(
            kafka.bootstrap_servers, kafka.events_topic, has_id("marker-after-seeds")
        )
        dlq = await read_until(kafka.bootstrap_servers, kafka.dlq_topic, lambda r: len(r) >= 4)
        collisions = sample(app, "mdm_broker_id_collisions_total", vendor="apple")
        duplicates = sample(app, "mdm_broker_duplicates_dropped_total", vendor="apple")

    # What each example was answered, both times.
    for example, row, (status, answer), (status2, answer2) in zip(
        examples, EXPECTED, first, second, strict=True
    ):
        _, where, want_status, want_reason, _ = row
        assert status == status2 == 200, where
        assert (answer["status"], answer["reason"]) == (want_status, want_reason), where
        if want_status == "accepted":
            assert answer["id"] == _expected_id(example, want_reason), where
            assert (answer2["status"], answer2["id"]) == ("duplicate", answer["id"]), where
        else:
            assert (answer2["status"], answer2["reason"]) == (want_status, want_reason), where

    # What is in Kafka: 13 events (+ the marker), 13 distinct ids, nothing from the re-post.
    seed_records: list[Record] = [r for r in records if b"marker-after-seeds" not in r.value]
    events = events_of(seed_records)
    assert len(events) == 13
    assert len({e.id for e in events}) == 13
    by_id = {e.id: (e, r) for e, r in zip(events, seed_records, strict=True)}
    for example, (_, where, want_status, want_reason, want_type) in zip(
        examples, EXPECTED, strict=True
    ):
        if want_status != "accepted":
            continue
        event, record = by_id[_expected_id(example, want_reason)]
        assert event.type.value == want_type, where
        assert event.source == f"/apple/locations/{UID}"
        assert record.key == f"apple:{UID}".encode()
        nid = example.parsed()["notificationId"]
        assert event.idcollision == (nid if want_reason == COLLISION else None), where
        assert example.body in record.value, where  # data.raw: the posted bytes, unchanged
        assert event.data["raw"] == example.parsed()
        event.typed_data()
        sdk = from_structured(KafkaMessage(headers={}, key=record.key, value=record.value))
        assert sdk["id"] == event.id
    assert collisions == 6
    assert duplicates == 13

    # The two examples without a usable envelope: dead-lettered, raw, twice (first and re-post).
    elided = [e.body for e, row in zip(examples, EXPECTED, strict=True) if row[2] != "accepted"]
    assert sorted(r.value for r in dlq) == sorted(elided * 2)
    assert {dict(r.headers)["dlq-reason"] for r in dlq} == {b"schema"}


def test_the_documented_collision_example_matches_the_seed_bodies() -> None:
    """docs/events.md shows the ids the article's USER_MANAGEMENT examples get; keep them true."""
    catalogue = (SEED_DIR.parents[2] / "docs" / "events.md").read_text()
    users = [e for e in seed_examples() if e.where == "Track User Events"]
    assert len(users) == 3
    for example in users[1:]:
        assert f"`{_expected_id(example, COLLISION)}`" in catalogue
