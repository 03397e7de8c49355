"""The publisher's memo of key -> partition agrees with aiokafka's default partitioner."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from broker.publisher import _KeyPartitions, murmur2


@dataclass
class FakeCluster:
    partitions: dict[str, set[int]] = field(default_factory=dict)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        found = self.partitions.get(topic)
        return None if found is None else set(found)


@dataclass
class FakeProducer:
    cluster: FakeCluster

    @property
    def client(self) -> FakeProducer:
        return self


def aiokafka_choice(key: bytes, partitions: set[int]) -> int:
    ordered = list(partitions)
    return int(DefaultPartitioner()(key, ordered, ordered))


def test_keys_map_as_the_default_partitioner_and_follow_a_partition_change() -> None:
    cluster = FakeCluster({"t": set(range(6))})
    memo = _KeyPartitions(max_keys=50)
    keys = [f"android:LC{i:04d}:dev{i}".encode() for i in range(200)]
    for _ in range(2):  # the second round is served from the memo (and its resets)
        choose = memo.chooser(FakeProducer(cluster))
        assert [choose("t", k) for k in keys] == [aiokafka_choice(k, set(range(6))) for k in keys]
    cluster.partitions["t"] = set(range(12))
    choose = memo.chooser(FakeProducer(cluster))
    assert [choose("t", k) for k in keys] == [aiokafka_choice(k, set(range(12))) for k in keys]


def test_unkeyed_records_and_unknown_topics_are_left_to_aiokafka() -> None:
    cluster = FakeCluster()
    choose = _KeyPartitions().chooser(FakeProducer(cluster))
    assert choose("t", None) is None
    assert choose("t", b"k") is None
    cluster.partitions["t"] = {0, 1, 2}  # metadata arrived during the call
    assert choose("t", b"k") == aiokafka_choice(b"k", {0, 1, 2})


def test_murmur2_equals_aiokafkas_for_every_tail_length() -> None:
    rng = random.Random(14)
    for length in range(70):
        for _ in range(50):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data), data
