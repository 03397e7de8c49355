"""``mdm-broker android check|test-push``: operator checks of the EMM credentials and feed.

``check`` obtains an access token with the configured service account (proves the key, scope and
token endpoint) without pulling anything. ``test-push --enterprise ID`` asks Google to send a
``testNotification``; a running broker then publishes it as an ``mdm.test`` event.
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

from adapters.android.api import EmmClient
from adapters.android.oauth import TokenProvider
from adapters.android.settings import AndroidSettings
from broker.errors import AdapterError, ConfigError
from broker.metrics import BrokerMetrics


def register(
    sub: argparse._SubParsersAction[Any], load: Callable[[Path | None], AndroidSettings]
) -> None:
    """Add ``android`` (with ``check`` and ``test-push``) to ``mdm-broker``."""
    android = sub.add_parser("android", help="Google Play EMM: check credentials, test push")
    actions = android.add_subparsers(dest="android_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="obtain an access token with the configured service account"
    )
    check.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    check.set_defaults(func=cmd_check, load_settings=load)
    push = actions.add_parser(
        "test-push", help="ask Google to send a testNotification for an enterprise"
    )
    push.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    push.add_argument("--enterprise", "-e", required=True, help="enterprise id")
    push.set_defaults(func=cmd_test_push, load_settings=load)


def _settings(args: argparse.Namespace) -> AndroidSettings:
    settings: AndroidSettings = args.load_settings(args.config)
    if settings.service_account_file is None and settings.service_account_json is None:
        raise ConfigError("android.service_account_file (or service_account_json) is not set")
    return settings


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)

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
