"""Bad input at the webhook: the expected status each, nothing wrong written, counted by reason."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from broker.app.config import BrokerSettings
from broker.events import EventType
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    OLD_TOKEN,
    TOKEN,
    apple_settings,
    control,
    events_of,
    has_id,
    notification_url,
    read_until,
    running_broker,
    sample,
    subscribe,
    wait_idle,
)
from tests.unit.apple.seeds import ASSET_COUNT, UID

pytestmark = pytest.mark.kafka

WRONG = "wrong-token-value-0123"


def _note(nid: str, **changes: object) -> dict[str, object]:
    doc = {**ASSET_COUNT, "notificationId": nid}
    doc.update(changes)
    return doc


async def test_rejections_write_nothing_wrong_and_are_counted(
    sim: AppleSimulator, broker_settings: BrokerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    apple = apple_settings(sim, max_body_bytes=4096)
    async with running_broker(broker_settings, apple) as app, aiohttp.ClientSession() as http:
        url = notification_url(app)

        async def post(body: bytes, token: str | None) -> int:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        good = orjson.dumps(_note("n-good"))
        assert await post(good, WRONG) == 401
        assert await post(good, None) == 401
        assert await post(orjson.dumps(_note("n-big", padding="x" * 5000)), TOKEN) == 413
        # Authenticated and stored in the DLQ: 2xx (Apple must not retry a deterministic failure).
        assert await post(b'{"notificationId": "n-bad", "notif', TOKEN) == 200
        schema_bad = orjson.dumps(
            _note("n-schema", notification={"adamId": "1", "countDelta": "many"})
        )
        assert await post(schema_bad, TOKEN) == 200
        assert await post(orjson.dumps(_note("n-uid", uId="999")), TOKEN) == 200
        async with http.post(
            f"{app.base_url}/apple/nobody/notifications",
            data=good,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 404

        # Accepted: the previous (rotated) token, and an unknown type delivered by the simulator.
        assert await post(orjson.dumps(_note("n-old-token")), OLD_TOKEN) == 200
        await subscribe(sim, app)
        unknown = {
            "notificationType": "SUBSCRIPTION_COUNT",
            "notificationId": "n-unknown",
            "notification": {"whatever": [1, 2]},
        }
        await control(sim, "POST", "/_sim/notifications", {"notifications": [unknown]}, expect=202)
        await wait_idle(sim)
        assert await post(orjson.dumps(_note("n-marker")), TOKEN) == 200

        kafka = app.settings.kafka
        records = await read_until(kafka.bootstrap_servers, kafka.events_topic, has_id("n-marker"))
        dlq = await read_until(
            kafka.bootstrap_servers, kafka.dlq_topic, lambda r: len(r) >= 3, timeout_s=30
        )
        metrics_text = ""
        async with http.get(f"{app.base_url}/metrics") as resp:
            metrics_text = await resp.text()
        unknown_received = sample(
            app, "mdm_broker_notifications_received_total", vendor="apple", type="mdm.unknown"
        )
        counted = {
            reason: sample(app, "mdm_broker_rejected_total", vendor="apple", reason=reason)
            for reason in ("unauthorized", "too_large", "unknown_tenant")
        }
        dead_counted = {
            reason: sample(app, "mdm_broker_dead_lettered_total", vendor="apple", reason=reason)
            for reason in ("malformed", "schema", "uid_mismatch")
        }

    ids = [e.id for e in events_of(records)]
    # Only the accepted ones, in order; nothing from the rejected requests.
    assert [i for i in ids if i.startswith("n-")] == ["n-old-token", "n-unknown", "n-marker"]
    (unknown_event,) = [e for e in events_of(records) if e.id == "n-unknown"]
    assert unknown_event.type is EventType.UNKNOWN
    assert unknown_event.vendortype == "SUBSCRIPTION_COUNT"
    assert unknown_event.data["raw"] == {**unknown, "uId": UID}

    assert unknown_received == 1
    reasons = sorted(dict(r.headers)["dlq-reason"].decode() for r in dlq)
    assert reasons == ["malformed", "schema", "uid_mismatch"]
    assert len(dlq) == 3
    bodies = {dict(r.headers)["dlq-reason"].decode(): r.value for r in dlq}
    assert bodies["malformed"] == b'{"notificationId": "n-bad", "notif'
    assert bodies["schema"] == schema_bad
    assert counted == {"unauthorized": 2, "too_large": 1, "unknown_tenant": 1}
    assert dead_counted == {"malformed": 1, "schema": 1, "uid_mismatch": 1}
    assert WRONG not in metrics_text
    assert TOKEN not in metrics_text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected" in logged
    for secret in (WRONG, TOKEN, OLD_TOKEN):
        assert secret not in logged
