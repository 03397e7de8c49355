"""``mdm-broker apple subscribe|status --tenant T``: register and inspect Apple's client config.

``subscribe`` POSTs the client config (notification types, this broker's URL, the tenant's first
notification auth token). Apple sends a TEST_NOTIFICATION to that URL *during* the call and
refuses the config (error 9728) when it is not answered 2xx, so the broker must be running and
reachable. ``status`` prints the live client config and the sToken expiry.
Exit codes: 0 accepted / shown, 1 Apple refused or could not be reached, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from adapters.apple.client import AppleApiClient
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.apple.stoken import STokenError, decode_s_token
from broker.errors import AdapterError, ConfigError


def register(
    sub: argparse._SubParsersAction[Any], load: Callable[[Path | None], AppleSettings]
) -> None:
    """Add ``apple`` (with ``subscribe`` and ``status``) to ``mdm-broker``."""
    apple = sub.add_parser("apple", help="Apple Apps and Books: client config (subscribe, status)")
    actions = apple.add_subparsers(dest="apple_command", required=True, metavar="ACTION")
    subscribe = actions.add_parser(
        "subscribe",
        help="register notification types, URL and auth token with Apple",
        description="POST /mdm/v2/client/config. Apple tests the URL with a TEST_NOTIFICATION "
        "during the call, so the broker must already be running.",
    )
    _common(subscribe)
    subscribe.add_argument(
        "--url", default=None, help="notification URL (default: apple.public_base_url + path)"
    )
    subscribe.add_argument(
        "--types",
        nargs="+",
        default=None,
        help="notification types (default: apple.notification_types)",
    )
    subscribe.set_defaults(func=cmd_subscribe, load_settings=load)
    status = actions.add_parser("status", help="show Apple's client config and token expiry")
    _common(status)
    status.set_defaults(func=cmd_status, load_settings=load)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", "-t", required=True, help="tenant name (apple.tenants.<name>)")
    parser.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")


def _client_for(
    args: argparse.Namespace,
) -> tuple[AppleApiClient, AppleSettings, AppleTenantSettings]:
    settings: AppleSettings = args.load_settings(args.config)
    tenant = settings.tenants.get(args.tenant)
    if tenant is None:
        raise ConfigError(f"apple.tenants has no tenant {args.tenant!r}")
    try:
        s_token = tenant.load_s_token()
    except OSError as exc:
        raise ConfigError(f"apple.tenants.{args.tenant}.s_token_file: {exc.strerror}") from exc
    if s_token is None:
        raise ConfigError(f"apple.tenants.{args.tenant} has neither s_token nor s_token_file")
    return AppleApiClient(settings, s_token), settings, tenant


async def subscribe(args: argparse.Namespace, out: TextIO) -> int:
    client, settings, tenant = _client_for(args)
    name = args.tenant
    url = args.url
    if url is None:
        if settings.public_base_url is None:
            raise ConfigError("set apple.public_base_url or pass --url")
        url = f"{settings.public_base_url.rstrip('/')}/apple/{name}/notifications"
    types = args.types or settings.notification_types
    async with client:
        try:
            doc = await client.set_client_config(
                notification_types=types,
                notification_url=url,
                notification_auth_token=tenant.notification_auth_tokens[0],
            )
        except AdapterError as exc:
            print(f"Apple refused the client config: {exc}", file=out)
            return 1
    print(f"Apple accepted the client config for location {doc.get('uId')}", file=out)
    print(f"  notification URL: {doc.get('notificationUrl')}", file=out)
    print(f"  subscribed types: {', '.join(doc.get('subscribedNotificationTypes', []))}", file=out)
    return 0


async def status(args: argparse.Namespace, out: TextIO) -> int:
    client, _, tenant = _client_for(args)
    async with client:
        try:
            doc = await client.get_client_config()
        except AdapterError as exc:
            print(f"Apple client config unavailable: {exc}", file=out)
            return 1
    print(f"location {doc.get('locationName')} (uId {doc.get('uId')})", file=out)
    print(f"  notification URL: {doc.get('notificationUrl', '(none)')}", file=out)
    types = doc.get("subscribedNotificationTypes") or []
    print(f"  subscribed types: {', '.join(types) or '(none)'}", file=out)
    registered = doc.get("notificationAuthToken")
    if isinstance(registered, str):
        known = any(registered == t.get_secret_value() for t in tenant.notification_auth_tokens)
        verdict = "one of ours" if known else "NOT accepted by this broker"
        print(f"  notification auth token: {verdict}", file=out)
    print(f"  token expires: {doc.get('tokenExpirationDate', '(not reported)')}", file=out)
    s_token = tenant.load_s_token()
    if s_token is not None:
        try:
            info = decode_s_token(s_token.get_secret_value())
        except STokenError as exc:
            print(f"  sToken: {exc}", file=out)
        else:
            days = (info.exp_date - datetime.now(UTC)).total_seconds() / 86400
            print(f"  sToken of {info.org_name}: expires in {days:.0f} day(s)", file=out)
    return 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    return asyncio.run(subscribe(args, sys.stdout))


def cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(status(args, sys.stdout))
