"""Dead-letter headers: original headers kept, earlier dlq-* headers replaced, detail bounded."""

from __future__ import annotations

from broker.consumer import ConsumedRecord, DeadLetterReason
from broker.consumer.dlq import dead_letter_headers


def test_headers_keep_the_original_and_replace_earlier_dead_letter_headers() -> None:
    record = ConsumedRecord(
        topic="mdm.events",
        partition=3,
        offset=41,
        key=b"k",
        value=b"v",
        headers=(("content-type", b"application/cloudevents+json"), ("dlq-reason", b"old")),
    )
    headers = dead_letter_headers(
        record, group="billing", reason=DeadLetterReason.HANDLER_FAILED, detail="x" * 5000,
        attempts=5,
    )  # fmt: skip
    names = [name for name, _ in headers]
    assert names.count("dlq-reason") == 1
    values = dict(headers)
    assert values["content-type"] == b"application/cloudevents+json"
    assert values["dlq-reason"] == b"handler_failed"
    assert values["dlq-attempts"] == b"5"
    assert values["dlq-group"] == b"billing"
    assert (values["dlq-source-topic"], values["dlq-source-partition"]) == (b"mdm.events", b"3")
    assert values["dlq-source-offset"] == b"41"
    assert len(values["dlq-detail"]) == 1024
    assert int(values["dlq-at"]) > 0
