"""The broker's dead-letter topic: read it, filter it, and re-drive it through current normalizers.

What is in it (written by :meth:`broker.publisher.KafkaPublisher.dead_letter`): authenticated
vendor input the broker could not turn into events or Kafka could not take, **raw** (the vendor's
bytes as received), with headers ``dlq-reason``, ``dlq-detail``, ``vendor``, ``tenant``,
``content-type``, ``received-at`` (epoch ms) and, for a payload cut to fit, ``dlq-truncated``,
``dlq-original-size`` and ``dlq-original-sha256``.

Vendors may add context headers a replay needs besides the raw input (Kapua: ``kapua-kind``,
``kapua-scope-id``, ``kapua-device-id``, ``kapua-operation-id``).

Replay is vendor-neutral: each vendor's adapter provides a :data:`Renormalizer` (raw input and
headers -> canonical events, with the ids the events would have had), and the composition root
hands the mapping ``vendor -> Renormalizer`` in; this module imports no adapter. Because event ids
are deterministic, re-publishing is idempotent downstream: the idempotent consumer skips an event
it has already processed, so replaying the same dead letters twice changes nothing.

Reading joins no consumer group and commits nothing: it never disturbs anyone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from broker.errors import NormalizationError, PublishError, RecordRejectedError
from broker.events import CanonicalEvent
from broker.kafka_security import client_kwargs
from broker.topics import partitions_of

if TYPE_CHECKING:
    from broker.settings import KafkaSettings


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    payload: bytes
    headers: Mapping[str, bytes]

    def header(self, name: str) -> str:
        return self.headers.get(name, b"").decode(errors="replace")

    @property
    def ref(self) -> str:
        """``partition:offset``: how ``dlq show`` names this record."""
        return f"{self.partition}:{self.offset}"

    @property
    def vendor(self) -> str:
        return self.header("vendor")

    @property
    def tenant(self) -> str:
        return self.header("tenant")

    @property
    def reason(self) -> str:
        return self.header("dlq-reason")

    @property
    def detail(self) -> str:
        return self.header("dlq-detail")

    @property
    def truncated(self) -> bool:
        return self.header("dlq-truncated") == "true"

    @property
    def original_size(self) -> int | None:
        """A truncated letter's input size in bytes (``dlq-original-size``), else None."""
        size = self.header("dlq-original-size")
        return int(size) if self.truncated and size.isdigit() else None

    @property
    def truncation(self) -> str:
        """For a truncated letter, what identifies the full input elsewhere: ``stored N of M
        bytes, original sha256 H``; else ``""``."""
        if not self.truncated:
            return ""
        digest = self.header("dlq-original-sha256") or "?"
        return (
            f"stored {len(self.payload)} of {self.original_size or '?'} bytes, "
            f"original sha256 {digest}"
        )

    @property
    def received_at(self) -> datetime:
        """When the broker received the input (``received-at``), else the record's timestamp."""
        raw = self.header("received-at")
        millis = int(raw) if raw.isdigit() else self.timestamp_ms
        return datetime.fromtimestamp(millis / 1000, tz=UTC)


class NotReplayable(Exception):
    """A dead letter its vendor cannot re-drive (e.g. written before the vendor stored the
    context a replay needs); the message says why and what to do instead."""


Renormalizer = Callable[[DeadLetter], Sequence[CanonicalEvent]]
"""A vendor's current normalizer applied to a dead letter's raw input. Returns the canonical
events (same ids as a first-time success would have had; possibly none); raises
NormalizationError when the input still cannot be mapped, NotReplayable when it cannot be
re-driven at all."""


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters to select. Empty sets match everything; times are inclusive bounds."""

    vendors: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    refs: frozenset[str] = frozenset()
    """``partition:offset`` of single records."""

    def matches(self, letter: DeadLetter) -> bool:
        when = letter.received_at
        return (
            (not self.vendors or letter.vendor in self.vendors)
            and (not self.reasons or letter.reason in self.reasons)
            and (not self.tenants or letter.tenant in self.tenants)
            and (self.since is None or when >= self.since)
            and (self.until is None or when <= self.until)
            and (not self.refs or letter.ref in self.refs)
        )


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """``2026-12-01T10:00:00Z`` (ISO 8601; UTC when no offset) or a duration ago: ``90s``,
    ``30m``, ``6h``, ``7d``. Raises ValueError with the accepted forms."""
    match = _RELATIVE.match(value.strip())
    if match:
        amount, unit = float(match.group(1)), _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {value!r} (use ISO 8601 like 2026-12-01T10:00:00Z, or 30m, 6h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def read_dead_letters(
    settings: KafkaSettings, selected: DlqFilter, *, limit: int | None = None
) -> list[DeadLetter]:
    """Every matching record of ``settings.dlq_topic`` present when the call started, oldest
    first per partition (at most ``limit``). Raises PublishError when Kafka cannot be read within
    ``request_timeout_s`` per step."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-dlq",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(settings.request_timeout_s * 1000),
        **client_kwargs(settings.security),
    )
    bound = settings.request_timeout_s
    letters: list[DeadLetter] = []
    try:
        numbers = await asyncio.wait_for(partitions_of(settings, settings.dlq_topic), bound)
        if not numbers:
            return []
        await asyncio.wait_for(consumer.start(), bound)
        tps = [TopicPartition(settings.dlq_topic, p) for p in numbers]
        consumer.assign(tps)
        await asyncio.wait_for(consumer.seek_to_beginning(*tps), bound)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), bound)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending and (limit is None or len(letters) < limit):
            batch = await asyncio.wait_for(consumer.getmany(*pending, timeout_ms=500), bound)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    letter = DeadLetter(
                        partition=tp.partition,
                        offset=record.offset,
                        timestamp_ms=record.timestamp,
                        key=record.key,
                        payload=record.value or b"",
                        headers={k: v or b"" for k, v in record.headers},
                    )
                    if selected.matches(letter):
                        letters.append(letter)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise PublishError(f"cannot read {settings.dlq_topic}: {exc!r}") from exc
    finally:
        await consumer.stop()
    return letters if limit is None else letters[:limit]


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[CanonicalEvent]) -> None: ...


@dataclass
class ReplayOutcome:
    letter: DeadLetter
    status: str
    """``replayed``, ``would_replay`` (dry run), ``still_failing``, ``rejected`` (Kafka still
    cannot take it), ``no_normalizer`` (vendor without replay support), ``not_replayable`` (the
    vendor says why) or ``truncated`` (detail: stored and original size, original SHA-256)."""
    events: list[CanonicalEvent] = field(default_factory=list)
    detail: str = ""


@dataclass
class ReplayReport:
    outcomes: list[ReplayOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def events_published(self) -> int:
        return sum(len(o.events) for o in self.outcomes if o.status == "replayed")

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.count("replayed") - self.count("would_replay")


async def replay(
    letters: Sequence[DeadLetter],
    renormalizers: Mapping[str, Renormalizer],
    publisher: EventPublisher | None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Re-run each letter's vendor normalizer and publish the events (``publisher=None``: dry
    run, nothing is written). One letter's failure never stops the others; a Kafka outage does
    (PublishError propagates: what was replayed so far stays replayed, re-running is safe)."""
    report = ReplayReport()
    for done, letter in enumerate(letters, start=1):
        report.outcomes.append(await _replay_one(letter, renormalizers, publisher))
        if progress is not None:
            progress(done, len(letters))
    return report


async def _replay_one(
    letter: DeadLetter,
    renormalizers: Mapping[str, Renormalizer],
    publisher: EventPublisher | None,
) -> ReplayOutcome:
    if letter.truncated:
        detail = f"raw input incomplete ({letter.truncation}): find it at the source"
        return ReplayOutcome(letter, "truncated", detail=detail)
    renormalize = renormalizers.get(letter.vendor)
    if renormalize is None:
        return ReplayOutcome(letter, "no_normalizer", detail=f"vendor {letter.vendor!r}")
    try:
        events = list(renormalize(letter))
    except NotReplayable as exc:
        return ReplayOutcome(letter, "not_replayable", detail=str(exc))
    except NormalizationError as exc:
        return ReplayOutcome(letter, "still_failing", detail=str(exc))
    except Exception as exc:  # a mapping bug: report it for this letter, go on with the others
        return ReplayOutcome(letter, "still_failing", detail=f"{type(exc).__name__}: {exc}")
    if publisher is None:
        return ReplayOutcome(letter, "would_replay", events)
    if not events:  # e.g. a Kapua operation record still RUNNING: its poller publishes the end
        return ReplayOutcome(letter, "replayed", detail="nothing to publish")
    try:
        await publisher.publish(events)
    except RecordRejectedError as exc:
        return ReplayOutcome(letter, "rejected", detail=str(exc))
    return ReplayOutcome(letter, "replayed", events)
