"""The simulated Pub/Sub subscription: leases, redelivery, modifyAckDeadline, retention, splits."""

from __future__ import annotations

import pytest

from simulators.android.pubsub_state import PubsubError, PubsubState

TOPIC, SUB = "projects/p/topics/t", "projects/p/subscriptions/s"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> PubsubState:
    s = PubsubState(clock=clock, first_message_id=5000)
    s.create_topic(TOPIC)
    s.create_subscription(SUB, TOPIC, ack_deadline_s=10, retention_s=3600)
    return s


def publish(state: PubsubState, n: int) -> list[str]:
    return state.publish(TOPIC, [{"data": "e30=", "attributes": {"k": "v"}} for _ in range(n)])


def test_unacked_message_is_redelivered_with_same_id_and_higher_attempt(
    state: PubsubState, clock: Clock
) -> None:
    [mid] = publish(state, 1)
    [first] = state.take(SUB, 10, 100)
    assert first["message"]["messageId"] == mid
    assert first["deliveryAttempt"] == 1
    assert state.take(SUB, 10, 100) == []  # leased
    clock.now += 10.0
    state.sweep()
    [second] = state.take(SUB, 10, 100)
    assert second["message"] == first["message"]
    assert second["deliveryAttempt"] == 2
    assert second["ackId"] != first["ackId"]
    assert list(state.redelivered_ids) == [mid]
    state.acknowledge(SUB, [second["ackId"]])
    assert [(r.message_id, r.delivery_attempt, r.late) for r in state.acked] == [(mid, 2, False)]
    clock.now += 100
    state.sweep()
    assert state.take(SUB, 10, 100) == []


def test_modify_ack_deadline_extends_and_zero_nacks(state: PubsubState, clock: Clock) -> None:
    publish(state, 2)
    a, b = state.take(SUB, 10, 100)
    clock.now += 9.0
    state.modify_ack_deadline(SUB, [a["ackId"]], 30)
    state.modify_ack_deadline(SUB, [b["ackId"]], 0)
    [again] = state.take(SUB, 10, 100)  # b, at once
    assert again["message"]["messageId"] == b["message"]["messageId"]
    clock.now += 5.0  # past a's original deadline, within its extension
    state.sweep()
    assert state.take(SUB, 10, 100) == []  # a still leased (extended), b leased again
    assert (state.stats.deadline_extensions, state.stats.nacked) == (1, 1)
    with pytest.raises(PubsubError, match="between 0 and 600"):
        state.modify_ack_deadline(SUB, [a["ackId"]], 601)


def test_late_ack_is_accepted_and_stale_ack_after_ack_is_a_no_op(
    state: PubsubState, clock: Clock
) -> None:
    publish(state, 1)
    [first] = state.take(SUB, 10, 100)
    clock.now += 11.0
    state.sweep()
    [second] = state.take(SUB, 10, 100)
    state.acknowledge(SUB, [first["ackId"]])  # expired lease: accepted, message gone
    assert state.stats.late_acks == 1
    state.acknowledge(SUB, [second["ackId"]])  # no error
    assert state.stats.duplicate_acks == 1
    assert len(state.acked) == 1
    with pytest.raises(PubsubError, match="invalid ack ID"):
        state.acknowledge(SUB, ["made-up"])


def test_retention_drops_old_unacked_messages(state: PubsubState, clock: Clock) -> None:
    [mid] = publish(state, 1)
    clock.now += 3601.0
    state.sweep()
    assert list(state.expired_ids) == [mid]
    assert state.take(SUB, 10, 100) == []


def test_concurrent_pulls_split_the_backlog(state: PubsubState) -> None:
    ids = publish(state, 10)
    state.active_pulls = 2  # two pulls waiting: neither takes the whole backlog
    first = state.take(SUB, 100, 1000)
    assert len(first) == 5
    rest = state.take(SUB, 100, 1000) + state.take(SUB, 100, 1000) + state.take(SUB, 100, 1000)
    taken = [m["message"]["messageId"] for m in first + rest]
    assert sorted(taken) == sorted(ids)  # disjoint, nothing lost


def test_rest_api_subscriptions_follow_pubsub_limits(state: PubsubState) -> None:
    with pytest.raises(PubsubError, match="between 10 and 600"):
        state.create_subscription("projects/p/subscriptions/x", TOPIC, ack_deadline_s=5)
    with pytest.raises(PubsubError) as info:
        state.create_subscription("projects/p/subscriptions/y", "projects/p/topics/none")
    assert info.value.status == 404
