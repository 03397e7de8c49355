"""The Apple renormalizer `dlq replay` uses: same id, same tenant check, raw bytes kept."""

from __future__ import annotations

import orjson
import pytest
from pydantic import SecretStr

from adapters.apple.replay import renormalizer
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from broker.devtools.examples import example_events
from broker.dlq import DeadLetter
from broker.errors import NormalizationError
from broker.events import EventType, encode_event


def _letter(payload: bytes, tenant: str) -> DeadLetter:
    headers = {"vendor": b"apple", "tenant": tenant.encode(), "received-at": b"1796165877113"}
    return DeadLetter(0, 7, 0, b"apple:x", payload, headers)


def _settings(expected_uid: str) -> AppleSettings:
    tenant = AppleTenantSettings(
        notification_auth_tokens=[SecretStr("t")], expected_uid=expected_uid
    )
    return AppleSettings(tenants={"acme": tenant})


def test_replayed_event_has_the_notification_id_and_the_stored_bytes() -> None:
    example = example_events()[EventType.ASSET_COUNT_CHANGED]
    raw = example.data["raw"]
    payload = orjson.dumps(raw)
    (event,) = renormalizer(_settings(example.tenant))(_letter(payload, "acme"))
    assert event.id == raw["notificationId"]
    assert event.type is EventType.ASSET_COUNT_CHANGED
    assert payload in encode_event(event)  # data.raw is the stored bytes, unchanged
    assert event.time.timestamp() == pytest.approx(1796165877.113)


def test_a_notification_for_another_location_still_fails() -> None:
    raw = example_events()[EventType.ASSET_COUNT_CHANGED].data["raw"]
    with pytest.raises(NormalizationError, match="uid_mismatch"):
        renormalizer(_settings("someone-else"))(_letter(orjson.dumps(raw), "acme"))
    with pytest.raises(NormalizationError):
        renormalizer(_settings("x"))(_letter(b"{not json", "acme"))


def test_a_too_deep_notification_stays_dead_lettered() -> None:
    """The webhook's depth limit applies to replays too: the spliced bytes would reach Kafka."""
    raw = example_events()[EventType.ASSET_COUNT_CHANGED].data["raw"]
    deep = orjson.dumps(
        {**raw, "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    )
    with pytest.raises(NormalizationError, match="too_deep"):
        renormalizer(_settings(raw["uId"]))(_letter(deep, "acme"))
