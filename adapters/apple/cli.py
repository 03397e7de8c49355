"""``mdm-broker apple subscribe|status|sync --tenant T``: Apple's client config, and a sync now.

``subscribe`` POSTs the client config (notification types, this broker's URL, the tenant's first
notification auth token). Apple sends a TEST_NOTIFICATION to that URL *during* the call and
refuses the config (error 9728) when it is not answered 2xx, so the broker must be running and
reachable. ``status`` prints the live client config and the sToken expiry.

``sync`` runs one sync of the location now, through the code the broker's scheduler runs
(:func:`adapters.apple.syncrun.run_sync`, reason ``manual``), against the configured Apple endpoint
and Kafka: each record read is published as a synced event and acked by Kafka (records that cannot
be normalized go to the DLQ), with a line of progress per step. Without ``--full`` it reads what
changed since the versions the broker stored in the state topic (everything when there are none);
``--full`` reads every data set whole. After each data set it stores the version reached as a
manual-sync entry in the state topic (never the location record: the owning broker stays its only
writer). The owner adopts it where its own stored version is still the one the manual sync started
from, so its next scheduled sync reads on from there instead of republishing the same records;
where the broker synced meanwhile, its own version is kept (see
:mod:`adapters.apple.syncscheduler`). With no broker running, the next owner adopts it at load.
Exit codes: 0 accepted / shown / synced, 1 Apple refused or could not be reached or Kafka did not
ack, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from adapters.apple.client import AppleApiClient
from adapters.apple.settings import AppleSettings, AppleTenantSettings
from adapters.apple.stoken import STokenError, decode_s_token
from adapters.apple.syncmetrics import AppleSyncMetrics
from adapters.apple.syncrun import run_sync
from adapters.apple.syncstate import (
    LocationRecord,
    ManualSync,
    manual_key,
    partition_of,
    sync_key,
)
from broker.errors import AdapterError, ConfigError, PublishError
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher
from broker.settings import KafkaSettings
from broker.state import StateWriter, load_state, state_partitions


def register(
    sub: argparse._SubParsersAction[Any],
    load: Callable[[Path | None], AppleSettings],
    load_kafka: Callable[[Path | None], KafkaSettings],
) -> None:
    """Add ``apple`` (with ``subscribe``, ``status`` and ``sync``) to ``mdm-broker``."""
    apple = sub.add_parser(
        "apple",
        help="Apple Apps and Books: client config (subscribe, status), sync now",
        description="Apple Apps and Books of one tenant (apple.tenants.<name>).\n\n"
        "examples:\n"
        "  mdm-broker apple subscribe -t demo -c broker.toml   (the broker must be running)\n"
        "  mdm-broker apple status -t demo -c broker.toml\n"
        "  mdm-broker apple sync -t demo -c broker.toml --full\n\n"
        "exit codes: 0 done, 1 Apple or Kafka failed, 2 usage or configuration error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    status = actions.add_parser(
        "status",
        help="show Apple's client config and token expiry",
        description="GET /mdm/v2/client/config and the sToken's expiry date; changes nothing.",
    )
    _common(status)
    status.set_defaults(func=cmd_status, load_settings=load)
    sync_parser = actions.add_parser(
        "sync",
        help="sync the location now: publish what changed (or everything, --full) to Kafka",
        description="Read the location's assignments, users and asset counts from Apple (since "
        "the versions stored in the state topic, or whole with --full) and publish them as "
        "synced events, as the broker's scheduled sync does. Reads the state topic, never "
        "writes it.",
    )
    _common(sync_parser)
    sync_parser.add_argument(
        "--full", action="store_true", help="read every data set whole, ignoring stored versions"
    )
    sync_parser.set_defaults(func=cmd_sync, load_settings=load, load_kafka=load_kafka)


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


async def stored_location(kafka: KafkaSettings, tenant: str) -> LocationRecord | None:
    """The tenant's location record in the state topic (None when it has none)."""
    partitions = await state_partitions(kafka)
    if not partitions:
        return None
    key = sync_key(tenant)
    entries = await load_state(kafka, prefix=key, partitions=[partition_of(key, len(partitions))])
    return LocationRecord.from_value(entries.get(key))


def _manual_saver(
    writer: StateWriter, key: str, base: dict[str, str]
) -> Callable[[LocationRecord], Awaitable[None]]:
    """``run_sync``'s checkpoint for the CLI: the versions reached, as a :class:`ManualSync`
    entry (the location record itself is the owning broker's)."""

    async def save(record: LocationRecord) -> None:
        if record.versions != base:
            entry = ManualSync(record.tenant, dict(base), dict(record.versions))
            await writer.put(key, entry.to_value())

    return save


def _describe(record: LocationRecord | None, heartbeat_s: float, out: TextIO) -> None:
    if record is None:
        print("no stored sync state: reading everything", file=out)
        return
    versions = ", ".join(f"{k} {v}" for k, v in sorted(record.versions.items())) or "none"
    print(f"stored versions: {versions}", file=out)
    if record.owner and record.stopped_at is None and record.alive_at is not None:
        age = time.time() - record.alive_at
        if age <= 2 * heartbeat_s:
            print(
                f"broker instance {record.owner} owns this location (alive {age:.0f}s ago); it "
                "takes the versions this sync reaches unless it syncs the location meanwhile",
                file=out,
            )


async def sync(args: argparse.Namespace, out: TextIO) -> int:
    client, settings, tenant = _client_for(args)
    kafka: KafkaSettings = args.load_kafka(args.config)
    record = LocationRecord(args.tenant)
    try:
        partitions = len(await state_partitions(kafka))
        stored = await stored_location(kafka, args.tenant) if partitions else None
    except PublishError as exc:
        print(f"cannot read the state topic {kafka.state_topic}: {exc}", file=out)
        return 1
    base = dict(stored.versions) if stored is not None else {}
    if args.full:
        print("full sync: reading every data set whole", file=out)
    else:
        _describe(stored, settings.sync.heartbeat_s, out)
        record.versions = dict(base)
    metrics = AppleSyncMetrics(BrokerMetrics())
    async with client, KafkaPublisher(kafka, KafkaHealth(), BrokerMetrics()) as publisher:
        if partitions:
            key = manual_key(args.tenant, partitions)
            save = _manual_saver(StateWriter(publisher), key, base)
        else:  # no state topic: no broker to tell
            save = _manual_saver_none
        try:
            report = await run_sync(
                record,
                "manual",
                source=client,
                default_uid=tenant.expected_uid or args.tenant,
                publisher=publisher,
                save=save,
                metrics=metrics,
                parallel=settings.sync.max_parallel_pages,
                progress=lambda line: print(line, file=out, flush=True),
            )
        except (AdapterError, PublishError) as exc:
            print(f"sync of {args.tenant!r} failed: {exc}", file=out)
            return 1
    print(
        f"synced {args.tenant!r}: {len(report.events)} event(s) in {report.duration_s:.1f}s, "
        f"{report.requests} request(s) to Apple",
        file=out,
    )
    return 0


async def _manual_saver_none(record: LocationRecord) -> None:
    """Without a state topic there is no broker state to record the versions in."""


def cmd_subscribe(args: argparse.Namespace) -> int:
    return asyncio.run(subscribe(args, sys.stdout))


def cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(status(args, sys.stdout))


def cmd_sync(args: argparse.Namespace) -> int:
    return asyncio.run(sync(args, sys.stdout))
