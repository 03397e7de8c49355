"""The canonical event contract: ids, keys, encoding, typed data, and the committed schema."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.app.config import BrokerSettings
from broker.devtools import schema
from broker.devtools.examples import example_events
from broker.events import (
    CONTENT_TYPE,
    KAFKA_HEADERS,
    AssetCountChangedData,
    CanonicalEvent,
    EventDecodeError,
    EventType,
    RawOnlyData,
    Vendor,
    android_event_id,
    apple_key,
    decode_event,
    encode_event,
    format_time,
    kapua_terminal_id,
    make_event,
    make_event_from_fields,
    source_for,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_every_type_has_an_example_that_round_trips() -> None:
    examples = example_events()
    assert set(examples) == set(EventType)
    for event in examples.values():
        decoded = decode_event(encode_event(event))
        assert decoded == event
        assert isinstance(decoded.typed_data(), type(event.typed_data()))
        assert decoded.data["raw"] == event.data["raw"]


def test_sources_follow_the_design() -> None:
    assert source_for(Vendor.APPLE, "42") == "/apple/locations/42"
    assert source_for(Vendor.ANDROID, "E1") == "/android/enterprises/E1"
    assert source_for(Vendor.KAPUA, "AQ") == "/kapua/scopes/AQ"


def test_android_id_is_stable_and_content_sensitive() -> None:
    body = {"productId": "app:x", "deviceId": "d1", "failureReason": "timeout"}
    first = android_event_id("E1", "installFailure", "1700000000000", body)
    # Key order differs: canonical JSON makes the redelivery hash the same.
    again = android_event_id("E1", "installFailure", 1700000000000, dict(reversed(body.items())))
    assert first == again
    assert len(first) == 32
    assert first != android_event_id("E1", "installFailure", "1700000000001", body)
    assert first != android_event_id("E2", "installFailure", "1700000000000", body)
    assert first != android_event_id("E1", "installFailure", "1700000000000", {**body, "x": 1})


@given(
    enterprise=st.text(min_size=1, max_size=20),
    kind=st.text(min_size=1, max_size=20),
    millis=st.integers(min_value=0, max_value=2**53),
    body=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=5),
)
def test_android_id_is_a_pure_function_of_content(
    enterprise: str, kind: str, millis: int, body: dict[str, object]
) -> None:
    assert android_event_id(enterprise, kind, millis, body) == android_event_id(
        enterprise, kind, str(millis), dict(body)
    )


def test_kapua_terminal_id_is_the_same_for_row_and_operation() -> None:
    assert kapua_terminal_id("op1", "completed") == kapua_terminal_id("op1", "COMPLETED")
    assert kapua_terminal_id("op1", "FAILED") == "op1:FAILED"
    with pytest.raises(ValueError, match="not a terminal"):
        kapua_terminal_id("op1", "RUNNING")


def test_make_event_rejects_data_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="AssetCountChangedData"):
        make_event(
            id="n1",
            vendor=Vendor.APPLE,
            tenant="1",
            type=EventType.ASSET_COUNT_CHANGED,
            vendortype="ASSET_COUNT",
            partitionkey=apple_key("1"),
            data=RawOnlyData(raw={}),
        )


@given(
    st.datetimes(  # a day of margin: shifting to UTC must not leave datetime's range
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(st.none(), st.timezones()),
    ),
)
def test_time_is_utc_truncated_to_milliseconds_with_a_four_digit_year(value: datetime) -> None:
    text = format_time(value)
    as_utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    expected = (
        f"{as_utc.year:04d}-{as_utc.month:02d}-{as_utc.day:02d}T{as_utc.hour:02d}:"
        f"{as_utc.minute:02d}:{as_utc.second:02d}.{as_utc.microsecond // 1000:03d}Z"
    )
    assert text == expected


def test_time_is_rfc3339_utc_with_z() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 678901)
    assert format_time(naive) == "2026-01-02T03:04:05.678Z"
    event = make_event(
        id="n1",
        vendor=Vendor.APPLE,
        tenant="1",
        type=EventType.ASSET_COUNT_CHANGED,
        vendortype="ASSET_COUNT",
        partitionkey=apple_key("1"),
        data=AssetCountChangedData(raw={}, adam_id="1", count_delta=2),
    )
    doc = orjson.loads(encode_event(event))
    assert doc["time"].endswith("Z")
    assert datetime.fromisoformat(doc["time"]) <= datetime.now(UTC)
    assert doc["specversion"] == "1.0"
    assert doc["datacontenttype"] == "application/json"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"specversion": "1.0"}', "not a canonical event"),
    ],
)
def test_decode_rejects_non_events(payload: bytes, match: str) -> None:
    with pytest.raises(EventDecodeError, match=match):
        decode_event(payload)


def _an_example() -> CanonicalEvent:
    return next(iter(example_events().values()))


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_decode_refuses_nan_and_infinity_as_not_json(token: bytes) -> None:
    """pydantic's JSON parser takes them; decode_event keeps orjson's verdict (RFC 8259)."""
    value = encode_event(_an_example())
    value = value.replace(b'"data":{', b'"data":{"x":' + token + b",", 1)
    with pytest.raises(EventDecodeError, match="not JSON"):
        decode_event(value)
    assert decode_event(value.replace(token, b"1", 1)).id == _an_example().id


def test_decode_of_bytes_and_str_agree_and_the_last_repeated_member_counts() -> None:
    value = encode_event(_an_example())
    repeated = value[:-1] + b',"id":"last"}'
    assert decode_event(repeated).id == "last"
    assert decode_event(repeated.decode()) == decode_event(repeated)
    with pytest.raises(EventDecodeError, match="JSON object"):
        decode_event('"just a string"')


def test_header_is_cloudevents_json() -> None:
    assert [("content-type", CONTENT_TYPE.encode())] == KAFKA_HEADERS
    assert CONTENT_TYPE == "application/cloudevents+json"


def test_committed_schema_and_docs_match_the_models() -> None:
    """Fails when a model changed without `make schema` (the published contract drifted)."""
    for relative, content in schema.generated_files(BrokerSettings).items():
        path = DOCS / relative
        assert path.is_file(), f"{path} missing: run `make schema`"
        assert path.read_text() == content, f"{path} is stale: run `make schema`"


def test_raw_bytes_are_spliced_in_unchanged_and_still_decode() -> None:
    """2**64 and 1.10 reach the record exactly as sent; consumers (ours and the CloudEvents SDK)
    still read the event, and an id-collision event carries its extension."""
    from cloudevents.kafka import KafkaMessage, from_structured

    from adapters.apple.normalize import normalize

    body = (
        b'{"notification": {"adamId": "1", "countDelta": -12, "big": 18446744073709551616, '
        b'"f": 1.10, "z": null},\n "notificationId": "n-1", "notificationType": "ASSET_COUNT",'
        b' "uId": "42"}'
    )
    event = normalize(orjson.loads(body), raw_json=body).with_collision_id("n-1~0123456789abcdef")
    encoded = encode_event(event)
    assert body in encoded
    decoded = decode_event(encoded)
    assert decoded.idcollision == "n-1"
    assert decoded.id == "n-1~0123456789abcdef"
    assert decoded.data["raw"]["notification"]["f"] == 1.1
    assert decoded.typed_data().model_dump()["count_delta"] == -12
    sdk = from_structured(KafkaMessage(headers={}, key=None, value=encoded))
    assert sdk["idcollision"] == "n-1"
    assert sdk.data["raw"]["notification"]["big"] == 2**64


def test_fast_encoding_gives_pydantic_json_modes_bytes_for_every_example() -> None:
    for event in example_events().values():
        json_mode = orjson.dumps(event.model_dump(mode="json", exclude_none=True))
        if event.raw_json is None:
            assert encode_event(event) == json_mode, event.type
        fields = {k: v for k, v in event.data.items() if k != "raw"}
        spliced = make_event_from_fields(
            id=event.id,
            vendor=event.vendor,
            tenant=event.tenant,
            type=event.type,
            vendortype=event.vendortype,
            partitionkey=event.partitionkey,
            raw=event.data["raw"],
            fields=fields,
            time=event.time,
            subject=event.subject,
            raw_json=orjson.dumps(event.data["raw"]),
        )
        spliced = spliced.model_copy(update={"idcollision": event.idcollision})
        assert spliced.raw_json is not None
        assert encode_event(spliced) == json_mode, event.type


def test_an_event_built_by_hand_with_non_json_data_still_encodes() -> None:
    event = CanonicalEvent(
        id="n1",
        source="/apple/locations/1",
        type=EventType.TEST,
        time=datetime(2026, 1, 2, tzinfo=UTC),
        vendor=Vendor.APPLE,
        tenant="1",
        vendortype="TEST",
        partitionkey="apple:1",
        data={"raw": {1: "integer key"}},
    )
    assert orjson.loads(encode_event(event))["data"] == {"raw": {"1": "integer key"}}
