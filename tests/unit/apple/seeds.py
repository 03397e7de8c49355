"""The example notifications of the Apple seed documents (../shared/seeds/000_*, 001_*, 004_*).

Copied as published, except: the ``...`` placeholders are removed, and the three USER_MANAGEMENT
examples, which the documentation prints with one and the same ``notificationId``, get distinct
ids for UPDATE and RETIRE (Apple defines the id as unique per notification; with the shared id
they would rightly be deduplicated as one notification).
"""

from __future__ import annotations

from typing import Any

UID = "2049025000431439"

TEST_NOTIFICATION: dict[str, Any] = {
    "notification": {},
    "notificationId": "792e327f-63ea-4658-9aec-f16f4327e3a8",
    "notificationType": "TEST_NOTIFICATION",
    "uId": UID,
}

ASSET_COUNT: dict[str, Any] = {
    "notification": {"adamId": "408709785", "countDelta": -12, "pricingParam": "STDQ"},
    "notificationId": "4a7801be-53f0-42e1-9505-81c0d1dc9da3",
    "notificationType": "ASSET_COUNT",
    "uId": UID,
}

ASSOCIATE: dict[str, Any] = {
    "notification": {
        "assignments": [
            {
                "adamId": "408709785",
                "pricingParam": "STDQ",
                "serialNumber": "97c42a74-c30e-4172-a65f-6e5a5ba3d477",
            },
            {
                "adamId": "408709785",
                "pricingParam": "STDQ",
                "serialNumber": "495622d3-76f1-4fd3-8647-3f0365159170",
            },
            {
                "adamId": "408709785",
                "pricingParam": "STDQ",
                "serialNumber": "eabcbb89-8213-4185-afb4-30cae931ea37",
            },
        ],
        "eventId": "87cbc650-16cc-4f9e-a833-e622f377a9f7",
        "result": "SUCCESS",
        "type": "ASSOCIATE",
    },
    "notificationId": "ba8bbb23-44c2-44f6-a928-eff6ba5ffac3",
    "notificationType": "ASSET_MANAGEMENT",
    "uId": UID,
}

DISASSOCIATE: dict[str, Any] = {
    "notification": {
        "assignments": [
            {"adamId": "408709785", "clientUserId": "client-100", "pricingParam": "STDQ"}
        ],
        "eventId": "4bd7371e-6482-4933-8e97-c29f25b7f5f5",
        "result": "SUCCESS",
        "type": "DISASSOCIATE",
    },
    "notificationId": "545e1f6f-ca8b-4e6c-98fe-a7ac3ef63b29",
    "notificationType": "ASSET_MANAGEMENT",
    "uId": UID,
}

REVOKE: dict[str, Any] = {
    "notification": {
        "assignments": [
            {"adamId": "408709785", "clientUserId": "client-100", "pricingParam": "STDQ"},
            {"adamId": "329103948", "clientUserId": "client-100", "pricingParam": "STDQ"},
        ],
        "eventId": "4bd7371e-6482-4933-8e97-c29f25b7f5f5",
        "result": "SUCCESS",
        "type": "REVOKE",
    },
    "notificationId": "545e1f6f-ca8b-4e6c-98fe-a7ac3ef63b28",
    "notificationType": "ASSET_MANAGEMENT",
    "uId": UID,
}


def _user_management(kind: str, notification_id: str, status: str) -> dict[str, Any]:
    return {
        "notification": {
            "eventId": "e0def1f8-9158-4343-9c52-8dd32da50b9b",
            "result": "SUCCESS",
            "type": kind,
            "users": [
                {
                    "clientUserId": "client-100",
                    "email": "client-100@apple.com",
                    "inviteCode": "f551b37da07146628e8dcbe0111f0364",
                    "status": status,
                }
            ],
        },
        "notificationId": notification_id,
        "notificationType": "USER_MANAGEMENT",
        "uId": UID,
    }


USER_CREATE = _user_management("CREATE", "4c0bbb9b-d5a6-4860-83ef-5cf362783c1e", "Registered")
USER_UPDATE = _user_management("UPDATE", "4c0bbb9b-d5a6-4860-83ef-5cf362783c1f", "Registered")
USER_RETIRE = _user_management("RETIRE", "4c0bbb9b-d5a6-4860-83ef-5cf362783c20", "Retired")

USER_ASSOCIATED: dict[str, Any] = {
    "notification": {
        "associatedUsers": [
            {
                "clientUserId": "client-100",
                "email": "client-100@apple.com",
                "idHash": "leSKk3IaE2vk2KLmv2k3/200D3=",
                "inviteCode": "f551b37da07146628e8dcbe0111f0364",
                "status": "Associated",
            }
        ]
    },
    "notificationId": "90b83144-fb93-4837-9c52-0ae147bdc421",
    "notificationType": "USER_ASSOCIATED",
    "uId": UID,
}

#: (notification, expected canonical type, expected vendortype)
SEED_EXAMPLES: list[tuple[dict[str, Any], str, str]] = [
    (TEST_NOTIFICATION, "mdm.test", "TEST_NOTIFICATION"),
    (ASSET_COUNT, "mdm.asset.count_changed", "ASSET_COUNT"),
    (ASSOCIATE, "mdm.assignment.associated", "ASSET_MANAGEMENT/ASSOCIATE"),
    (DISASSOCIATE, "mdm.assignment.disassociated", "ASSET_MANAGEMENT/DISASSOCIATE"),
    (REVOKE, "mdm.assignment.revoked", "ASSET_MANAGEMENT/REVOKE"),
    (USER_CREATE, "mdm.user.created", "USER_MANAGEMENT/CREATE"),
    (USER_UPDATE, "mdm.user.updated", "USER_MANAGEMENT/UPDATE"),
    (USER_RETIRE, "mdm.user.retired", "USER_MANAGEMENT/RETIRE"),
    (USER_ASSOCIATED, "mdm.user.associated", "USER_ASSOCIATED"),
]
