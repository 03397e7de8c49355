"""``mdm-broker dlq list|show|replay``: see and re-drive the broker's dead letters.

Reading joins no consumer group and commits nothing. ``replay`` re-runs the vendor's *current*
normalizer on the stored raw input and publishes the events with the ids they would have had, so
after a mapping fix a replay is idempotent downstream (the idempotent consumer skips what it has
already processed; replaying twice publishes nothing new to it). Dead letters stay in the DLQ
topic after a replay (it is a log; its retention removes them).

Exit codes: 0 done; 1 Kafka unreachable, or some selected letters could not be replayed
(listed with the reason); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from broker.app import registry
from broker.app.config import BrokerSettings, load_settings
from broker.dlq import DeadLetter, DlqFilter, ReplayReport, parse_time, read_dead_letters, replay
from broker.errors import ConfigError
from broker.health import KafkaHealth
from broker.metrics import BrokerMetrics
from broker.publisher import KafkaPublisher

_DETAIL_CHARS = 80
_PROGRESS_MIN = 20
"""Replays of at least this many letters show a progress bar on stderr."""

EXAMPLES = """\
examples:
  mdm-broker dlq list -c broker.toml                          every dead letter, oldest first
  mdm-broker dlq list -c broker.toml --vendor apple --since 6h --reason schema
  mdm-broker dlq show 0:42 -c broker.toml                     headers and payload of one letter
  mdm-broker dlq replay -c broker.toml --vendor android --reason schema --dry-run
  mdm-broker dlq replay -c broker.toml --vendor android --reason schema
"""


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    parser.add_argument("--vendor", action="append", default=[], help="apple, android, kapua")
    parser.add_argument(
        "--reason", action="append", default=[], help="dlq-reason, e.g. schema, record_too_large"
    )
    parser.add_argument("--tenant", action="append", default=[], help="uId, enterprise, scope")
    parser.add_argument("--since", help="received at or after: ISO 8601 time, or 30m, 6h, 7d ago")
    parser.add_argument("--until", help="received at or before (same forms as --since)")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many letters (oldest first)"
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="list, show and replay dead letters",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="one line per dead letter",
        description="One line per dead letter, oldest first: PARTITION:OFFSET, time, vendor, "
        "reason, tenant, size. Example: mdm-broker dlq list -c broker.toml --since 6h",
    )
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=cmd_list)
    show = actions.add_parser(
        "show",
        help="headers and payload of dead letters",
        description="Headers and payload of the letters at PARTITION:OFFSET (as `dlq list` "
        "prints them). Example: mdm-broker dlq show 0:42 -c broker.toml",
    )
    show.add_argument("refs", nargs="+", metavar="PARTITION:OFFSET", help="as `dlq list` shows")
    show.add_argument("--config", "-c", type=Path, default=None, help="TOML settings file")
    show.set_defaults(func=cmd_show)
    again = actions.add_parser(
        "replay",
        help="re-run the current normalizer on the raw input and publish (same ids)",
        description=(
            "Re-run the vendor's current normalizer on each selected dead letter's raw input "
            "and publish the events with the ids they would have had. Letters that still fail "
            "are listed with the reason; truncated letters (listed with the original size and "
            "SHA-256, to find the input elsewhere) and Kapua letters without their polling "
            "context (written before it was stored) are skipped. Nothing is removed from the DLQ."
        ),
    )
    _filters(again)
    again.add_argument("--ref", action="append", default=[], help="only PARTITION:OFFSET")
    again.add_argument(
        "--dry-run", action="store_true", help="show what would be published; write nothing"
    )
    again.set_defaults(func=cmd_replay)


def _selection(args: argparse.Namespace, refs: list[str] | None = None) -> DlqFilter:
    try:
        return DlqFilter(
            vendors=frozenset(getattr(args, "vendor", [])),
            reasons=frozenset(getattr(args, "reason", [])),
            tenants=frozenset(getattr(args, "tenant", [])),
            since=parse_time(args.since) if getattr(args, "since", None) else None,
            until=parse_time(args.until) if getattr(args, "until", None) else None,
            refs=frozenset(refs or []),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _settings(args: argparse.Namespace) -> BrokerSettings:
    return load_settings(args.config)


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "ref": letter.ref,
        "received_at": letter.received_at.isoformat(),
        "vendor": letter.vendor,
        "tenant": letter.tenant,
        "reason": letter.reason,
        "bytes": len(letter.payload),
        "truncated": letter.truncated,
        "original_bytes": letter.original_size,
        "original_sha256": letter.header("dlq-original-sha256") or None,
        "detail": letter.detail,
    }


def cmd_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout  # looked up per call, not at import
    settings = _settings(args)
    letters = asyncio.run(read_dead_letters(settings.kafka, _selection(args), limit=args.limit))
    for letter in letters:
        if args.json:
            out.write(orjson.dumps(_summary(letter)).decode() + "\n")
            continue
        detail = letter.detail
        if len(detail) > _DETAIL_CHARS:
            detail = detail[: _DETAIL_CHARS - 3] + "..."
        cut = (
            f" (truncated from {letter.original_size or '?'}B: not replayable)"
            if letter.truncated
            else ""
        )
        out.write(
            f"{letter.ref:<10} {letter.received_at:%Y-%m-%dT%H:%M:%SZ}  {letter.vendor:<7} "
            f"{letter.reason:<18} tenant={letter.tenant or '-'}  {len(letter.payload)}B{cut}  "
            f"{detail}\n"
        )
    if not args.json:
        print(f"{len(letters)} dead letter(s) in {settings.kafka.dlq_topic}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout  # looked up per call, not at import
    settings = _settings(args)
    letters = asyncio.run(read_dead_letters(settings.kafka, _selection(args, args.refs)))
    missing = set(args.refs) - {letter.ref for letter in letters}
    for letter in letters:
        out.write(f"== {letter.ref}\n")
        for name, value in letter.headers.items():
            out.write(f"{name}: {value.decode(errors='replace')}\n")
        if letter.truncated:
            out.write(
                f"NOTE: truncated, {letter.truncation}: the payload below is incomplete and "
                "cannot be replayed; find the full input at the source by its SHA-256\n"
            )
        out.write("\n")
        try:
            pretty = orjson.dumps(orjson.loads(letter.payload), option=orjson.OPT_INDENT_2)
            out.write(pretty.decode() + "\n")
        except orjson.JSONDecodeError:
            out.write(letter.payload.decode(errors="replace") + "\n")
    for ref in sorted(missing):
        print(f"mdm-broker: no dead letter {ref}", file=sys.stderr)
    return 1 if missing else 0


def progress_bar(err: TextIO) -> Callable[[int, int], None]:
    """A one-line bar on ``err`` (redrawn in place on a terminal, every 10% otherwise)."""
    tty = err.isatty()
    shown = -1

    def update(done: int, total: int) -> None:
        nonlocal shown
        if total < _PROGRESS_MIN:
            return
        tenth = done * 10 // total
        if not tty and tenth == shown and done != total:
            return
        shown = tenth
        filled = done * 30 // total
        line = f"replay [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        err.write(("\r" + line) if tty else (line + "\n"))
        if tty and done == total:
            err.write("\n")
        err.flush()

    return update


def cmd_replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout  # looked up per call, not at import
    settings = _settings(args)
    selected = _selection(args, args.ref)
    report = asyncio.run(_replay(settings, selected, args.limit, dry_run=args.dry_run))
    for outcome in report.outcomes:
        ids = ",".join(e.id for e in outcome.events)
        more = f" {outcome.detail}" if outcome.detail else ""
        out.write(f"{outcome.letter.ref:<10} {outcome.status:<13} {ids}{more}\n")
    verb = "would publish" if args.dry_run else "published"
    events = (
        sum(len(o.events) for o in report.outcomes) if args.dry_run else report.events_published
    )
    print(
        f"{len(report.outcomes)} dead letter(s): {verb} {events} event(s); "
        f"not replayed: {report.failed}",
        file=sys.stderr,
    )
    truncated = [o.letter for o in report.outcomes if o.status == "truncated"]
    if truncated:
        print(
            f"{len(truncated)} truncated letter(s) cannot be replayed; find their input at the "
            "source:",
            file=sys.stderr,
        )
        for letter in truncated:
            print(f"  {letter.ref} {letter.vendor} {letter.truncation}", file=sys.stderr)
    return 1 if report.failed else 0


async def _replay(
    settings: BrokerSettings, selected: DlqFilter, limit: int | None, *, dry_run: bool
) -> ReplayReport:
    letters = await read_dead_letters(settings.kafka, selected, limit=limit)
    renormalizers = registry.renormalizers(settings)
    if dry_run:
        return await replay(letters, renormalizers, None, progress=progress_bar(sys.stderr))
    async with KafkaPublisher(settings.kafka, KafkaHealth(), BrokerMetrics()) as publisher:
        return await replay(letters, renormalizers, publisher, progress=progress_bar(sys.stderr))
