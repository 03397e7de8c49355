"""The recent-id window: duplicates, id collisions, and its count and byte bounds."""

from __future__ import annotations

import hashlib

from broker.idwindow import (
    ENTRY_OVERHEAD_BYTES,
    IdVerdict,
    RecentIdWindow,
    collision_id,
    content_digest,
)

SRC = "/apple/locations/1"


def test_same_id_same_content_is_a_duplicate_different_content_a_collision() -> None:
    window = RecentIdWindow(max_entries=10, max_bytes=1_000_000)
    first, second = b'{"n": 1}', b'{"n": 2}'
    assert window.decide(SRC, "id-1", content_digest(first)).verdict is IdVerdict.NEW
    window.remember(SRC, "id-1", content_digest(first))
    assert window.decide(SRC, "id-1", content_digest(first)).verdict is IdVerdict.DUPLICATE

    decision = window.decide(SRC, "id-1", content_digest(second))
    assert decision.verdict is IdVerdict.COLLISION
    assert decision.original_id == "id-1"
    assert decision.event_id == "id-1~" + hashlib.sha256(second).hexdigest()[:16]
    window.remember(SRC, decision.event_id, content_digest(second))
    # The colliding input redelivered: the same derived id, now a duplicate.
    again = window.decide(SRC, "id-1", content_digest(second))
    assert (again.verdict, again.event_id) == (IdVerdict.DUPLICATE, decision.event_id)
    # Another source with the same id is unrelated.
    assert window.decide("/apple/locations/2", "id-1", content_digest(first)).verdict is (
        IdVerdict.NEW
    )


def test_collision_id_is_deterministic() -> None:
    digest = content_digest(b"body")
    assert collision_id("x", digest) == collision_id("x", digest)
    assert collision_id("x", digest) == "x~" + hashlib.sha256(b"body").hexdigest()[:16]


def test_bounded_by_count() -> None:
    window = RecentIdWindow(max_entries=2, max_bytes=1_000_000)
    for i in range(3):
        window.remember(SRC, f"id-{i}", content_digest(b"x"))
    assert len(window) == 2
    assert window.decide(SRC, "id-0", content_digest(b"x")).verdict is IdVerdict.NEW
    assert window.decide(SRC, "id-2", content_digest(b"x")).verdict is IdVerdict.DUPLICATE


def test_bounded_by_bytes_whatever_the_id_length() -> None:
    limit = 20_000
    window = RecentIdWindow(max_entries=1_000_000, max_bytes=limit)
    for i in range(200):
        window.remember(SRC, f"{i}-" + "x" * 4000, content_digest(b"x"))
        assert window.size_bytes <= limit
    assert 0 < len(window) <= limit // (4000 + ENTRY_OVERHEAD_BYTES)
    window.remember(SRC, "y" * (limit + 1), content_digest(b"x"))  # larger than the bound
    assert window.size_bytes <= limit


def test_disabled_window_remembers_nothing() -> None:
    window = RecentIdWindow(max_entries=0, max_bytes=1_000)
    window.remember(SRC, "id", content_digest(b"x"))
    assert window.decide(SRC, "id", content_digest(b"x")).verdict is IdVerdict.NEW


def test_concurrent_inputs_with_one_id_and_different_content_get_two_ids() -> None:
    window = RecentIdWindow(max_entries=10, max_bytes=1_000_000)
    a, b = content_digest(b"a"), content_digest(b"b")
    first = window.begin(SRC, "id", a)
    second = window.begin(SRC, "id", b)  # while the first is still in flight
    same = window.begin(SRC, "id", a)  # same content in flight: published again, same id
    assert (first.verdict, second.verdict, same.verdict) == (
        IdVerdict.NEW,
        IdVerdict.COLLISION,
        IdVerdict.NEW,
    )
    assert same.event_id == first.event_id == "id"
    window.finish(SRC, first, a, published=False)  # Kafka did not ack the first one
    window.finish(SRC, same, a, published=True)
    window.finish(SRC, second, b, published=True)
    assert window.decide(SRC, "id", a).verdict is IdVerdict.DUPLICATE
    assert window.decide(SRC, "id", b) == second.__class__(
        IdVerdict.DUPLICATE, second.event_id, "id"
    )
