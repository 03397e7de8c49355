"""Apple's error numbers and messages (service config ``errorCodes``, VENDOR_NOTES.md 1.4)."""

from __future__ import annotations

ERROR_MESSAGES: dict[int, str] = {
    9601: "Login required.",
    9602: "Invalid argument.",
    9603: "Internal error.",
    9609: "Unable to find the registered user.",
    9621: "The token has expired. You need to generate a new token online using your organization's "
    "login at school.apple.com or business.apple.com.",
    9625: "The server has revoked the sToken.",
    9634: "Service removed.",
    9646: "There are too many recent requests. Try again momentarily.",
    9650: "The provided page index must be greater than 0, and less than the total number of pages.",
    9700: "Max assets limit on request has been passed.",
    9701: "Max clientUserIds limit on request has been passed.",
    9702: "Max serialNumbers limit on request has been passed.",
    9703: "Duplicate assets found in request.",
    9704: "Duplicate clientUserIds found in request.",
    9705: "Duplicate serialNumbers found in request.",
    9706: "Asset in request is not revocable.",
    9707: "Asset in request is not device assignable.",
    9708: "EventId could not be found.",
    9709: "There are not enough licenses for this app or book available to assign to the "
    "selected group.",
    9710: "Both the notification URL and the authentication token are necessary.",
    9711: "Either the notification URL or the authentication token exceeds its maximum length.",
    9712: "The provided notification URL must be a valid URL and use HTTPS as the protocol.",
    9713: "The MDM metadata exceeds the maximum length.",
    9714: "The number of users exceeds the maximum.",
    9715: "The request contains duplicate users.",
    9716: "A registered user already exists with the specified clientUserId.",
    9717: "The request contains an invalid email address.",
    9718: "The request doesn't contain an asset.",
    9719: "Either clientUserIds or serialNumbers are required arguments.",
    9720: "Users are a required argument.",
    9721: "The request contains an invalid version ID.",
    9722: "This request contains an invalid authorization header. The header must match the format "
    "'Bearer {sToken}'.",
    9723: "You must provide an MDM name, ID, and metadata when setting the MDM information.",
    9724: "The MDM ID exceeds the maximum length.",
    9725: "The MDM name exceeds the maximum length.",
    9726: "This request contains an unsupported HTTP method for the requested endpoint.",
    9727: "This request contains an unsupported Content-Type.",
    9728: "The provided notification URL is unreachable.",
}


def error_body(number: int, **extra: object) -> dict[str, object]:
    """An ErrorResponse ``{errorNumber, errorMessage, errorInfo?}``."""
    body: dict[str, object] = {"errorNumber": number, "errorMessage": ERROR_MESSAGES[number]}
    body.update(extra)
    return body
