"""``mdm-broker android check|test-push``: operator checks of the Android sources.

``check`` covers both sources that are configured: Play EMM (``[android]``: obtains an access
token with its service account, proving key, scope and token endpoint) and the Android Management
API (``[amapi]``: obtains a Pub/Sub token and reads the subscription, proving it exists and
comparing its ``ackDeadlineSeconds`` with ``amapi.ack_deadline_s``). Nothing is pulled, so no
message is leased. ``test-push --enterprise ID`` asks Google (EMM) to send a ``testNotification``;
a running broker then publishes it as an ``mdm.test`` event.
Exit codes: 0 success, 1 rejected or unreachable, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from adapters.android.amapi_settings import AmapiSettings
from adapters.android.api import EmmClient
from adapters.android.oauth import TokenProvider
from adapters.android.pubsub import PubsubClient
from adapters.android.settings import AndroidSettings
from broker.errors import AdapterError, ConfigError, VendorAuthError
from broker.metrics import BrokerMetrics


def register(
    sub: argparse._SubParsersAction[Any],
    load: Callable[[Path | None], AndroidSettings],
    load_amapi: Callable[[Path | None], AmapiSettings] | None = None,
) -> None:
    """Add ``android`` (with ``check`` and ``test-push``) to ``mdm-broker``."""
    android = sub.add_parser(
        "android",
        help="Google Play EMM and Android Management API: check credentials, test push",
        description="Google Play EMM ([android]) and Android Management API ([amapi]).\n\n"
        "examples:\n"
        "  mdm-broker android check -c broker.toml\n"
        "  mdm-broker android test-push -e LC0123abcd -c broker.toml\n\n"
        "exit codes: 0 done, 1 Google refused or failed, 2 usage or configuration error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = android.add_subparsers(dest="android_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="check the configured sources: EMM token; AMAPI token and Pub/Sub subscription",
        description="Checks [android] (EMM) when its service account is set and [amapi] when it "
        "is enabled or its service account is set; pulls nothing.",
    )
    check.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    check.set_defaults(func=cmd_check, load_settings=load, load_amapi_settings=load_amapi)
    push = actions.add_parser(
        "test-push",
        help="ask Google to send a testNotification for an enterprise",
        description="Play EMM enterprises.sendTestPushNotification: the broker's pullers should "
        "then publish an mdm.test event (watch with `mdm-broker tail --type mdm.test`).",
    )
    push.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    push.add_argument("--enterprise", "-e", required=True, help="enterprise id")
    push.set_defaults(func=cmd_test_push, load_settings=load)


def _settings(args: argparse.Namespace) -> AndroidSettings:
    settings: AndroidSettings = args.load_settings(args.config)
    if settings.service_account_file is None and settings.service_account_json is None:
        raise ConfigError("android.service_account_file (or service_account_json) is not set")
    return settings


def _emm_configured(settings: AndroidSettings) -> bool:
    return settings.service_account_file is not None or settings.service_account_json is not None


def _amapi_configured(settings: AmapiSettings) -> bool:
    return settings.enabled or (
        settings.service_account_file is not None or settings.service_account_json is not None
    )


def cmd_check(args: argparse.Namespace) -> int:
    emm: AndroidSettings = args.load_settings(args.config)
    loader = getattr(args, "load_amapi_settings", None)
    amapi: AmapiSettings | None = loader(args.config) if loader is not None else None
    checks: list[Callable[[], int]] = []
    if _emm_configured(emm):
        checks.append(lambda: _check_emm(emm))
    if amapi is not None and _amapi_configured(amapi):
        checks.append(lambda: _check_amapi(amapi))
    if not checks:
        raise ConfigError(
            "nothing to check: set android.service_account_file (Play EMM) and/or "
            "amapi.service_account_file with amapi.subscription (Android Management API)"
        )
    results = [check() for check in checks]
    return max(results)


def _check_emm(settings: AndroidSettings) -> int:
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            await TokenProvider(settings, session).get()

    try:
        asyncio.run(run())
    except AdapterError as exc:
        print(f"android: credentials NOT accepted: {exc}", file=sys.stderr)
        return 1
    print("android: service account accepted; access token obtained")
    return 0


def _check_amapi(settings: AmapiSettings) -> int:
    if not settings.subscription:
        raise ConfigError("amapi.subscription is not set (projects/{p}/subscriptions/{s})")

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            tokens = TokenProvider(settings, session)
            await tokens.get()
            print("amapi: service account accepted; Pub/Sub access token obtained")
            client = PubsubClient(
                base_url=settings.api_base_url,
                subscription=settings.subscription,
                session=session,
                tokens=tokens,
                metrics=BrokerMetrics(),
                api_timeout_s=settings.api_timeout_s,
            )
            return await client.get_subscription()

    try:
        subscription = asyncio.run(run())
    except VendorAuthError as exc:
        if str(exc).startswith("pubsub_get: HTTP 403"):
            print(
                f"amapi: cannot read {settings.subscription} ({exc}); pulling needs only "
                "roles/pubsub.subscriber, reading it roles/pubsub.viewer",
                file=sys.stderr,
            )
            return 0
        print(f"amapi: credentials NOT accepted: {exc}", file=sys.stderr)
        return 1
    except AdapterError as exc:
        print(f"amapi: subscription {settings.subscription} NOT usable: {exc}", file=sys.stderr)
        return 1
    deadline = subscription.get("ackDeadlineSeconds")
    print(
        f"amapi: subscription {settings.subscription} on {subscription.get('topic', '?')} "
        f"(ackDeadlineSeconds {deadline})"
    )
    if isinstance(deadline, int | float) and deadline < settings.ack_deadline_s:
        print(
            f"amapi: WARNING amapi.ack_deadline_s = {settings.ack_deadline_s} is above the "
            f"subscription's {deadline} s: leases would be assumed longer than they are",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_test_push(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            client = EmmClient(
                base_url=settings.api_base_url,
                session=session,
                tokens=TokenProvider(settings, session),
                metrics=BrokerMetrics(),
                api_timeout_s=settings.api_timeout_s,
            )
            return await client.send_test_push_notification(args.enterprise)

    try:
        result = asyncio.run(run())
    except AdapterError as exc:
        print(f"android: sendTestPushNotification failed: {exc}", file=sys.stderr)
        return 1
    print(f"android: test notification sent (messageId {result.get('messageId', '?')})")
    return 0
