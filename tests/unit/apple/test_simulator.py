"""The Apple simulator behaves as documented (VENDOR_NOTES.md section 1)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from adapters.apple.client import AppleApiClient
from adapters.apple.errors import AppleApiError
from simulators.apple.server import AppleSimulator
from tests.unit.apple.receiver import Receiver

ALL_TYPES = ["ASSET_MANAGEMENT", "USER_MANAGEMENT", "USER_ASSOCIATED", "ASSET_COUNT"]


async def _subscribe(
    client: AppleApiClient, receiver: Receiver, types: list[str] = ALL_TYPES
) -> None:
    await client.set_client_config(
        notification_types=types,
        notification_url=receiver.url,
        notification_auth_token=SecretStr("hook-secret"),
    )


async def test_client_config_sends_test_notification_synchronously(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver)
    (test,) = receiver.of_type("TEST_NOTIFICATION")  # already there when the POST returned
    assert receiver.posts[0][0] == "Bearer hook-secret"
    assert test["notification"] == {}
    assert test["uId"] == sim.default.uid
    config = await client.get_client_config()
    assert config["notificationUrl"] == receiver.url
    assert config["subscribedNotificationTypes"] == ALL_TYPES
    assert config["uId"] == sim.default.uid


async def test_client_config_is_refused_when_the_test_notification_fails(
    client: AppleApiClient, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    with pytest.raises(AppleApiError) as info:
        await _subscribe(client, receiver)
    assert info.value.error_number == 9728
    with pytest.raises(AppleApiError) as unreachable:
        await client.set_client_config(
            notification_url="http://127.0.0.1:9/none", notification_auth_token=SecretStr("t")
        )
    assert unreachable.value.error_number == 9728
    assert "notificationUrl" not in await client.get_client_config()


async def test_client_config_validation(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    with pytest.raises(AppleApiError) as both:
        await client._call("POST", "/client/config", operation="t", json={"notificationUrl": "x"})
    assert both.value.error_number == 9710
    sim.config.require_https = True
    with pytest.raises(AppleApiError) as https:
        await _subscribe(client, receiver)
    assert https.value.error_number == 9712
    with pytest.raises(AppleApiError) as mdm:
        await client.set_client_config(mdm_info={"id": "x"})
    assert mdm.value.error_number == 9723
    with pytest.raises(AppleApiError) as types:
        await client.set_client_config(notification_types=["NOPE"])
    assert types.value.error_number == 9602


async def test_association_is_chunked_by_100_and_status_completes(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver)
    sim.default.buy("408709785", "STDQ", 500)
    serials = [f"S{i}" for i in range(250)]
    answer = await client.associate(
        [{"adamId": "408709785", "pricingParam": "STDQ"}], serial_numbers=serials
    )
    assert set(answer) >= {"eventId", "tokenExpirationDate", "uId"}
    assert await sim.wait_idle(10)
    notes = receiver.of_type("ASSET_MANAGEMENT")
    assert sorted(len(n["notification"]["assignments"]) for n in notes) == [50, 100, 100]
    assert {a["serialNumber"] for n in notes for a in n["notification"]["assignments"]} == set(
        serials
    )
    assert len({n["notificationId"] for n in notes}) == 3
    status = await client.event_status(answer["eventId"])
    assert status["eventStatus"] == "COMPLETE"
    assert status["numCompleted"] == status["numRequested"] == 250
    assignments = await client.sync_assignments(adamId="408709785")
    assert len(assignments.items) == 250


async def test_not_enough_licences_fails_part_of_the_event(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver)
    sim.default.buy("1", "STDQ", 5)
    answer = await client.associate([{"adamId": "1"}], serial_numbers=[f"S{i}" for i in range(8)])
    assert await sim.wait_idle(10)
    notes = {
        n["notification"]["result"]: n["notification"] for n in receiver.of_type("ASSET_MANAGEMENT")
    }
    assert len(notes["SUCCESS"]["assignments"]) == 5
    assert len(notes["FAILURE"]["assignments"]) == 3
    assert notes["FAILURE"]["error"]["errorNumber"] == 9709
    status = await client.event_status(answer["eventId"])
    assert status["eventStatus"] == "FAILED"
    assert (status["numCompleted"], status["numRequested"]) == (5, 8)
    assert status["failures"][0]["errorNumber"] == 9709


async def test_request_limits_and_unknown_event(
    sim: AppleSimulator, client: AppleApiClient
) -> None:
    sim.default.buy("1", "STDQ", 5)
    cases = [
        ({"assets": [{"adamId": str(i)} for i in range(26)], "serialNumbers": ["s"]}, 9700),
        ({"assets": [{"adamId": "1"}, {"adamId": "1"}], "serialNumbers": ["s"]}, 9703),
        ({"assets": [{"adamId": "1"}], "serialNumbers": ["s", "s"]}, 9705),
        ({"assets": [{"adamId": "1"}]}, 9719),
        ({"assets": [], "serialNumbers": ["s"]}, 9718),
        ({"assets": [{"adamId": "1"}], "serialNumbers": [f"s{i}" for i in range(1001)]}, 9702),
    ]
    for body, number in cases:
        with pytest.raises(AppleApiError) as info:
            await client._call("POST", "/assets/associate", operation="t", json=body)
        assert info.value.error_number == number, body
    with pytest.raises(AppleApiError) as missing:
        await client.event_status("no-such-event")
    assert missing.value.error_number == 9708
    with pytest.raises(AppleApiError) as method:
        await client._call("DELETE", "/assets", operation="t")
    assert method.value.error_number == 9726


async def test_user_flows(sim: AppleSimulator, client: AppleApiClient, receiver: Receiver) -> None:
    await _subscribe(client, receiver)
    await client.manage_users("create", [{"clientUserId": "c1", "email": "c1@example.com"}])
    assert await sim.wait_idle(10)
    (created,) = receiver.of_type("USER_MANAGEMENT")
    user = created["notification"]["users"][0]
    assert (user["status"], created["notification"]["type"]) == ("Registered", "CREATE")
    assert user["inviteCode"]
    await sim_control_accept(sim, "c1")
    (associated,) = receiver.of_type("USER_ASSOCIATED")
    assert associated["notification"]["associatedUsers"][0]["status"] == "Associated"
    assert associated["notification"]["associatedUsers"][0]["idHash"]
    again = await client.manage_users("create", [{"clientUserId": "c1", "email": "c1@example.com"}])
    await client.manage_users("retire", [{"clientUserId": "c1"}])
    assert await sim.wait_idle(10)
    results = [
        (n["notification"]["type"], n["notification"]["result"])
        for n in receiver.of_type("USER_MANAGEMENT")
    ]
    assert results == [("CREATE", "SUCCESS"), ("CREATE", "FAILURE"), ("RETIRE", "SUCCESS")]
    assert (await client.event_status(again["eventId"]))["failures"][0]["errorNumber"] == 9716
    users = await client.sync_users()
    assert users.items[0]["status"] == "Retired"


async def sim_control_accept(sim: AppleSimulator, client_user_id: str) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.base_url}/_sim/users/{client_user_id}/accept", json={}) as resp,
    ):
        assert resp.status == 202
    assert await sim.wait_idle(10)


async def test_only_subscribed_types_are_sent(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver, ["ASSET_COUNT"])
    note = sim.default.buy("7", "STDQ", 3)
    sim.notify(sim.default, note)
    await client.associate([{"adamId": "7"}], serial_numbers=["a"])
    assert await sim.wait_idle(10)
    assert [b["notificationType"] for _, b in receiver.posts] == [
        "TEST_NOTIFICATION",
        "ASSET_COUNT",
    ]
    assert receiver.of_type("ASSET_COUNT")[0]["notification"]["countDelta"] == 3


async def test_revoke_removes_assignments(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver)
    sim.default.buy("9", "STDQ", 2)
    await client.associate([{"adamId": "9"}], serial_numbers=["a", "b"])
    assert await sim.wait_idle(10)
    answer = await client.revoke(serial_numbers=["a"])
    assert await sim.wait_idle(10)
    (revoked,) = [
        n for n in receiver.of_type("ASSET_MANAGEMENT") if n["notification"]["type"] == "REVOKE"
    ]
    assert revoked["notification"]["assignments"] == [
        {"adamId": "9", "pricingParam": "STDQ", "serialNumber": "a"}
    ]
    assert (await client.event_status(answer["eventId"]))["numCompleted"] == 1
    assert [a["serialNumber"] for a in (await client.sync_assignments()).items] == ["b"]


async def test_three_attempts_then_dropped(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver)
    receiver.default = 500
    sim.notify(sim.default, sim.default.buy("1", "STDQ", 1))
    assert await sim.wait_idle(10)
    (record,) = [r for r in sim.deliverer.records.values() if r.notification_type == "ASSET_COUNT"]
    assert record.outcome == "dropped"
    assert record.attempts == ["500", "500", "500"]
    receiver.default = 200
    receiver.statuses = [503]
    sim.notify(sim.default, sim.default.buy("2", "STDQ", 1))
    assert await sim.wait_idle(10)
    latest = sim.deliverer.records[sim.deliverer.order[-1]]
    assert (latest.outcome, latest.attempts) == ("delivered", ["503", "200"])


async def test_duplicate_and_drop_knobs(
    sim: AppleSimulator, client: AppleApiClient, receiver: Receiver
) -> None:
    await _subscribe(client, receiver)
    sim.faults.update({"duplicate_rate": 1.0})
    note = sim.default.buy("1", "STDQ", 1)
    sim.notify(sim.default, note)
    assert await sim.wait_idle(10)
    assert [b["notificationId"] for b in receiver.of_type("ASSET_COUNT")] == [
        note["notificationId"]
    ] * 2
    sim.faults.update({"duplicate_rate": 0.0, "drop_rate": 1.0})
    dropped = sim.default.buy("2", "STDQ", 1)
    sim.notify(sim.default, dropped)
    assert await sim.wait_idle(10)
    assert sim.deliverer.records[dropped["notificationId"]].outcome == "dropped_fault"
    assert len(receiver.of_type("ASSET_COUNT")) == 2
    with pytest.raises(ValueError, match="unknown fault knob"):
        sim.faults.update({"nope": 1})
