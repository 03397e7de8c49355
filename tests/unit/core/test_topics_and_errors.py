"""Topic specs agree with the producer's size limit; Kafka errors map to one class each."""

from __future__ import annotations

import hashlib

import pytest
from aiokafka import errors as ke

from adapters.kapua.settings import KapuaSettings
from broker.app import registry
from broker.app.config import BrokerSettings
from broker.kafka_errors import Failure, breaks_session, classify
from broker.publisher import _fit_dead_letter, record_size
from broker.settings import KafkaSettings
from broker.topics import TopicNeed, TopicReport, TopicSpec, require_topics, topic_specs


def test_every_topic_takes_what_the_producer_may_send() -> None:
    settings = KafkaSettings(max_request_bytes=3_000_000, replication_factor=3)
    specs = topic_specs(settings, [TopicNeed("w", "watch"), TopicNeed("c", "x", compacted=True)])
    assert [s.name for s in specs] == [
        settings.events_topic,
        settings.dlq_topic,
        settings.state_topic,
        "w",
        "c",
    ]
    for spec in specs:
        assert spec.config["max.message.bytes"] == "3000000"
        assert spec.config["min.insync.replicas"] == "2"
        assert spec.purpose
    compacted = {s.name for s in specs if s.config.get("cleanup.policy") == "compact"}
    assert compacted == {settings.state_topic, "c"}


def test_kapua_watch_topic_is_needed_when_kapua_is_enabled() -> None:
    off = BrokerSettings()
    assert registry.topic_needs(off) == []
    assert [n.name for n in registry.topic_needs(off, include_disabled=True)] == ["mdm.kapua.watch"]
    on = BrokerSettings(kapua=KapuaSettings(enabled=True, api_key="k"))
    assert [n.name for n in registry.topic_needs(on)] == ["mdm.kapua.watch"]
    no_watch = BrokerSettings(
        kapua=KapuaSettings(enabled=True, api_key="k", watch_topic_enabled=False)
    )
    assert registry.topic_needs(no_watch) == []


def test_missing_topic_without_auto_creation_names_topic_and_fix() -> None:
    missing = TopicSpec("mdm.kapua.watch", 3, 1, {}, "Kapua watch requests")
    report = TopicReport(missing=[missing], auto_create=False)
    with pytest.raises(Exception, match=r"mdm\.kapua\.watch \(Kapua watch requests\)") as info:
        require_topics(report, KafkaSettings(), "--config b.toml")
    assert "fix: mdm-broker topics create --config b.toml" in str(info.value)
    require_topics(TopicReport(missing=[missing], auto_create=True), KafkaSettings(), "")


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (ke.MessageSizeTooLargeError(), Failure.RECORD_FATAL),
        (ke.RecordTooLargeError(), Failure.RECORD_FATAL),
        (ke.CorruptRecordException(), Failure.RECORD_FATAL),
        (ke.OutOfOrderSequenceNumber(), Failure.PRODUCER_FATAL),
        (ke.UnknownProducerId(), Failure.PRODUCER_FATAL),
        (ke.ProducerFenced(), Failure.PRODUCER_FATAL),
        (ke.UnknownError(), Failure.PRODUCER_FATAL),
        (ke.NotLeaderForPartitionError(), Failure.TRANSIENT),
        (ke.KafkaConnectionError(), Failure.TRANSIENT),
        (ke.KafkaTimeoutError(), Failure.TRANSIENT),
        (TimeoutError(), Failure.TRANSIENT),
    ],
)
def test_kafka_errors_are_classified(exc: BaseException, failure: Failure) -> None:
    assert classify(exc).failure is failure


def test_only_broken_sessions_recreate_the_producer() -> None:
    too_large = classify(ke.MessageSizeTooLargeError())
    assert breaks_session(too_large, reached_broker=True)  # the broker saw its sequence numbers
    assert not breaks_session(too_large, reached_broker=False)  # refused client-side
    assert breaks_session(classify(ke.OutOfOrderSequenceNumber()), reached_broker=True)
    assert not breaks_session(classify(ke.NotLeaderForPartitionError()), reached_broker=True)


def test_dead_letter_is_cut_to_fit_with_size_and_digest() -> None:
    payload = b"a" * 50_000
    headers = [("dlq-reason", b"record_too_large")]
    same, kept = _fit_dead_letter(b"k", payload, headers, 60_000)
    assert same is payload
    assert kept == headers
    cut, marked = _fit_dead_letter(b"k", payload, headers, 10_000)
    assert record_size(b"k", cut, marked) <= 10_000
    assert payload.startswith(cut)
    assert len(cut) > 9_000
    found = dict(marked)
    assert found["dlq-original-size"] == b"50000"
    assert found["dlq-original-sha256"] == hashlib.sha256(payload).hexdigest().encode()
