"""Every complete seed example, delivered by the simulator after a CLI subscribe, is in Kafka once.

The simulator re-serializes what it delivers, so this is not the verbatim test
(test_seed_verbatim.py); it shows the subscribe flow and that examples sharing a
``notificationId`` with other content (as the documents print them) each land once, the later
ones under a derived id flagged ``idcollision``."""

from __future__ import annotations

import io
from argparse import Namespace
from pathlib import Path

import pytest
from cloudevents.kafka import KafkaMessage, from_structured

from adapters.apple.cli import status, subscribe
from broker.app.config import BrokerSettings, load_apple_settings
from simulators.apple.server import AppleSimulator
from tests.e2e.apple.helpers import (
    OLD_TOKEN,
    TENANT,
    TOKEN,
    apple_settings,
    control,
    events_of,
    has_id,
    notification_url,
    read_until,
    running_broker,
    wait_idle,
)
from tests.unit.apple.seeds import SEED_EXAMPLES, UID

pytestmark = pytest.mark.kafka


def _toml(sim: AppleSimulator, path: Path) -> Path:
    path.write_text(
        f"""
[apple]
enabled = true
api_base_url = "{sim.api_url}"
[apple.tenants.{TENANT}]
notification_auth_tokens = ["{TOKEN}", "{OLD_TOKEN}"]
expected_uid = "{UID}"
s_token = "{sim.default.s_token}"
"""
    )
    return path


async def test_cli_subscribe_then_every_seed_example_lands_once(
    sim: AppleSimulator, broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    assert sim.default.uid == UID
    async with running_broker(broker_settings, apple_settings(sim)) as app:
        config = _toml(sim, tmp_path / "broker.toml")
        out = io.StringIO()
        args = Namespace(
            load_settings=load_apple_settings,
            tenant=TENANT,
            config=config,
            url=notification_url(app),
            types=None,
        )
        assert await subscribe(args, out) == 0, out.getvalue()
        assert "accepted" in out.getvalue()
        out = io.StringIO()
        assert (
            await status(
                Namespace(load_settings=load_apple_settings, tenant=TENANT, config=config), out
            )
            == 0
        )
        shown = out.getvalue()
        assert "ASSET_MANAGEMENT" in shown
        assert "one of ours" in shown
        assert TOKEN not in shown

        # Apple's TEST_NOTIFICATION was delivered during the subscribe call, so it is in Kafka now.
        test_ids = [
            d["notificationId"]
            for d in (await control(sim, "GET", "/_sim/deliveries"))["deliveries"]
            if d["notificationType"] == "TEST_NOTIFICATION"
        ]
        assert len(test_ids) == 1

        posted = [example for example, _, _ in SEED_EXAMPLES]
        await control(sim, "POST", "/_sim/notifications", {"notifications": posted}, expect=202)
        await wait_idle(sim)
        # A marker after everything was acked: same key, same partition, so it comes last.
        marker = {
            "notificationType": "ASSET_COUNT",
            "notificationId": "marker-1",
            "notification": {"adamId": "1", "countDelta": 1, "pricingParam": "STDQ"},
        }
        await control(sim, "POST", "/_sim/notifications", {"notifications": [marker]}, expect=202)
        records = await read_until(
            app.settings.kafka.bootstrap_servers,
            app.settings.kafka.events_topic,
            has_id("marker-1"),
        )

    events = events_of(records)
    ids = [e.id for e in events]
    assert ids.count(test_ids[0]) == 1
    assert len(set(ids)) == len(ids)
    for example, expected_type, expected_vendortype in SEED_EXAMPLES:
        nid = example["notificationId"]
        matches = [(e, r) for e, r in zip(events, records, strict=True) if e.data["raw"] == example]
        assert len(matches) == 1, (example, [(e.id, e.data["raw"]) for e in events])
        ((event, record),) = matches
        assert event.id == nid or (event.id.startswith(f"{nid}~") and event.idcollision == nid)
        assert event.type.value == expected_type
        assert event.vendortype == expected_vendortype
        assert event.source == f"/apple/locations/{UID}"
        assert event.tenant == UID
        assert event.vendor.value == "apple"
        assert event.partitionkey == f"apple:{UID}"
        assert record.key == f"apple:{UID}".encode()
        assert event.data["raw"] == example
        event.typed_data()  # data conforms to the published model
        sdk = from_structured(
            KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        )
        assert sdk["id"] == event.id
        assert sdk["type"] == expected_type
    assert len(ids) == 1 + len(SEED_EXAMPLES) + 1  # TEST from subscribe, the seeds, the marker
