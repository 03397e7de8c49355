"""``mdm-broker tail``: follow the canonical events topic, for operators and for debugging.

Read-only: it joins no consumer group and commits nothing, so it never disturbs real consumers.
Each event is printed as one line, pretty (time, vendor, type, tenant, subject, id, partition and
offset, then the canonical ``data`` fields without ``raw``) or, with ``--json``, as the canonical
CloudEvents JSON. Records that are not canonical events are reported on stderr and skipped.
Stops on Ctrl-C/SIGTERM, after ``--max-events`` printed events, or after ``--idle-timeout-s``
without a matching event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from broker.app.config import load_settings
from broker.errors import ConfigError, PublishError
from broker.events import CanonicalEvent, EventDecodeError, EventType, Vendor, decode_event
from broker.kafka_security import client_kwargs
from broker.settings import KafkaSettings

_DATA_PREVIEW_CHARS = 200


@dataclass(frozen=True)
class TailOptions:
    """What to show and when to stop. Empty filter sets match everything."""

    vendors: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    json_output: bool = False
    from_beginning: bool = False
    max_events: int | None = None
    idle_timeout_s: float | None = None

    def matches(self, event: CanonicalEvent) -> bool:
        return (
            (not self.vendors or event.vendor.value in self.vendors)
            and (not self.types or event.type.value in self.types)
            and (not self.tenants or event.tenant in self.tenants)
        )


def format_pretty(event: CanonicalEvent, partition: int, offset: int) -> str:
    """One human-readable line; ``data`` without ``raw``, cut to a preview."""
    summary = {k: v for k, v in event.data.items() if k != "raw"}
    data = orjson.dumps(summary, option=orjson.OPT_SORT_KEYS).decode() if summary else ""
    if len(data) > _DATA_PREVIEW_CHARS:
        data = data[: _DATA_PREVIEW_CHARS - 3] + "..."
    head = (
        f"{event.model_dump(mode='json')['time']}  {event.vendor.value:<7}  {event.type.value:<30}"
        f"  tenant={event.tenant}  subject={event.subject or '-'}  id={event.id}"
        f"  [p{partition}@{offset}]"
    )
    return f"{head}  {data}" if data else head


def format_json(event: CanonicalEvent) -> str:
    """The canonical CloudEvents JSON of the event, one line."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True)).decode()


async def tail(
    settings: KafkaSettings,
    options: TailOptions,
    *,
    out: TextIO,
    err: TextIO,
    stop: asyncio.Event | None = None,
) -> int:
    """Print matching events of ``settings.events_topic`` until a stop condition; return how many.

    Raises :class:`PublishError` when Kafka cannot be reached within ``request_timeout_s``.
    """
    stop = stop or asyncio.Event()
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-tail",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if options.from_beginning else "latest",
        request_timeout_ms=int(settings.request_timeout_s * 1000),
        **client_kwargs(settings.security),
    )
    try:
        await asyncio.wait_for(consumer.start(), settings.request_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise PublishError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc!r}") from exc
    printed = 0
    last_match = time.monotonic()
    try:
        while not stop.is_set():
            if options.max_events is not None and printed >= options.max_events:
                break
            if (
                options.idle_timeout_s is not None
                and time.monotonic() - last_match >= options.idle_timeout_s
            ):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    if options.max_events is not None and printed >= options.max_events:
                        break
                    if _show(record, options, out, err):
                        printed += 1
                        last_match = time.monotonic()
            out.flush()
    finally:
        await consumer.stop()
    return printed


def _show(record: Any, options: TailOptions, out: TextIO, err: TextIO) -> bool:
    try:
        event = decode_event(record.value or b"")
    except EventDecodeError as exc:
        print(f"skipping record p{record.partition}@{record.offset}: {exc}"[:500], file=err)
        return False
    if not options.matches(event):
        return False
    line = (
        format_json(event)
        if options.json_output
        else format_pretty(event, record.partition, record.offset)
    )
    print(line, file=out)
    return True


# -- command line ------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``mdm-broker tail``."""
    parser = sub.add_parser(
        "tail",
        help="follow canonical events (pretty or --json), filtered by vendor/type/tenant",
        description=(
            "Print canonical events as they arrive on the events topic. Read-only: joins no "
            "consumer group, commits nothing. Filters of one kind are OR-ed, kinds are AND-ed."
        ),
        epilog=(
            "examples:\n"
            "  mdm-broker tail --from-beginning --vendor apple\n"
            "  mdm-broker tail --json --type mdm.app.install_failed | jq .data\n"
            "  mdm-broker tail --tenant LE-1 --max-events 10"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    parser.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers")
    parser.add_argument("--topic", help="override kafka.events_topic")
    parser.add_argument("--json", action="store_true", help="one CloudEvents JSON per line")
    parser.add_argument(
        "--vendor",
        action="append",
        default=[],
        choices=[v.value for v in Vendor],
        metavar="VENDOR",
        help="apple, android or kapua (repeatable)",
    )
    parser.add_argument(
        "--type",
        action="append",
        default=[],
        choices=[t.value for t in EventType],
        metavar="TYPE",
        help="canonical type, e.g. mdm.assignment.associated (repeatable)",
    )
    parser.add_argument("--tenant", action="append", default=[], help="uId/enterpriseId/scopeId")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest retained event"
    )
    parser.add_argument("--max-events", type=int, default=None, help="stop after N events")
    parser.add_argument(
        "--idle-timeout-s", type=float, default=None, help="stop after S seconds without events"
    )
    parser.set_defaults(func=cmd_tail)


def cmd_tail(args: argparse.Namespace) -> int:
    from broker.signals import install_stop_signals

    if args.max_events is not None and args.max_events < 1:
        raise ConfigError("--max-events must be >= 1")
    if args.idle_timeout_s is not None and args.idle_timeout_s <= 0:
        raise ConfigError("--idle-timeout-s must be > 0")
    overrides: dict[str, Any] = {}
    if args.bootstrap_servers:
        overrides["bootstrap_servers"] = args.bootstrap_servers
    if args.topic:
        overrides["events_topic"] = args.topic
    base = load_settings(args.config).kafka
    try:
        kafka = KafkaSettings.model_validate({**base.model_dump(), **overrides})
    except ValueError as exc:
        raise ConfigError(f"invalid option: {exc}") from None
    options = TailOptions(
        vendors=frozenset(args.vendor),
        types=frozenset(args.type),
        tenants=frozenset(args.tenant),
        json_output=args.json,
        from_beginning=args.from_beginning,
        max_events=args.max_events,
        idle_timeout_s=args.idle_timeout_s,
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop)
        await tail(kafka, options, out=sys.stdout, err=sys.stderr, stop=stop)

    asyncio.run(main())
    return 0
