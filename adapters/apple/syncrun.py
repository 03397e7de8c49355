"""One sync of one location: read what may be stale, publish it, checkpoint after every data set.

Order (per data set: assignments, users, assets):

1. read it (assignments and users with the stored ``sinceVersionId``, assets whole), at most
   ``parallel`` pages at once; a 9721 (stale ``sinceVersionId``) answer makes it read the whole
   data set instead (reason ``version_reset``);
2. publish every record as a synced event and wait for the Kafka acks (a record that cannot be
   normalized is dead-lettered with reason ``schema``);
3. only then store the first page's ``versionId`` as the next ``sinceVersionId`` and mark the data
   set done in the run (state topic).

A crash anywhere repeats at most the current data set with the same ``sinceVersionId``: the same
records, the same event ids (see :mod:`adapters.apple.syncevents`), nothing new for the consumer.
The run is complete (``synced_through`` = its start) only after the last data set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from adapters.apple.client import SyncResult
from adapters.apple.errors import AppleApiError
from adapters.apple.syncevents import DATASETS, Dataset, id_basis, synced_event
from adapters.apple.syncmetrics import AppleSyncMetrics
from adapters.apple.syncstate import LocationRecord, SyncRun
from broker.errors import NormalizationError
from broker.events import CanonicalEvent, SyncInfo
from broker.sink import EventSink

log = logging.getLogger(__name__)

INVALID_VERSION = 9721
SERVICE_CONFIG = "service_config"
PUBLISH_CHUNK = 500


class SyncSource(Protocol):
    """What a sync needs from the API client (:class:`AppleApiClient` implements it)."""

    requests: dict[str, int]

    async def sync_assignments(
        self, since_version_id: str | None = None, *, parallel: int = 1
    ) -> SyncResult: ...

    async def sync_users(
        self, since_version_id: str | None = None, *, parallel: int = 1
    ) -> SyncResult: ...

    async def sync_assets(self, *, parallel: int = 1) -> SyncResult: ...


@dataclass
class SyncReport:
    """What one completed sync did and cost."""

    tenant: str
    reason: str
    requests: int = 0
    """Requests to the location's endpoints (its sToken's rate budget), retries included."""
    service_config_requests: int = 0
    """Refreshes of the process-wide service config this sync happened to trigger."""
    records: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    full_reads: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _location_requests(source: SyncSource) -> int:
    return sum(n for operation, n in source.requests.items() if operation != SERVICE_CONFIG)


async def _read(
    source: SyncSource, dataset: Dataset, since: str | None, parallel: int
) -> SyncResult:
    if dataset == "assignments":
        return await source.sync_assignments(since, parallel=parallel)
    if dataset == "users":
        return await source.sync_users(since, parallel=parallel)
    return await source.sync_assets(parallel=parallel)


async def run_sync(
    record: LocationRecord,
    reason: str,
    *,
    source: SyncSource,
    default_uid: str,
    publisher: EventSink,
    save: Callable[[LocationRecord], Awaitable[None]],
    metrics: AppleSyncMetrics,
    parallel: int = 5,
    clock: Callable[[], float] = time.time,
    progress: Callable[[str], None] | None = None,
) -> SyncReport:
    """Run (or resume, when ``record.run`` is set) a sync of ``record``'s location.

    Raises the client's errors (AdapterError) and PublishError; progress made so far is stored.
    ``progress`` gets one human-readable line per step (``mdm-broker apple sync`` prints them).
    """
    say = progress or (lambda line: None)
    began = time.monotonic()
    if record.run is None:
        record.run = SyncRun(reason, clock())
        await save(record)
    run = record.run
    report = SyncReport(record.tenant, run.reason)
    requests_before = _location_requests(source)
    shared_before = source.requests.get(SERVICE_CONFIG, 0)
    started = datetime.fromtimestamp(run.started, UTC)
    for dataset in DATASETS:
        if dataset in run.done:
            continue
        since = None if dataset == "assets" else record.versions.get(dataset)
        ds_reason = run.reason
        say(f"{dataset}: reading {f'changes since version {since}' if since else 'all'} ...")
        try:
            result = await _read(source, dataset, since, parallel)
        except AppleApiError as exc:
            if exc.error_number != INVALID_VERSION or since is None:
                raise
            log.warning(
                "apple sync %r: sinceVersionId of %s refused (9721), reading it whole",
                record.tenant,
                dataset,
            )
            say(f"{dataset}: Apple refused sinceVersionId {since} (9721), reading all ...")
            metrics.full_reads.labels(dataset).inc()
            report.full_reads.append(dataset)
            since, ds_reason = None, "version_reset"
            result = await _read(source, dataset, None, parallel)
        uid = result.uid or default_uid
        info = SyncInfo.model_validate(
            {
                "reason": ds_reason,
                "version_id": result.version_id,
                "since_version_id": since,
                "started": started,
            }
        )
        basis = id_basis(dataset, since, result.version_id)
        events = await _normalize(publisher, record.tenant, uid, dataset, result.items, info, basis)
        for start in range(0, len(events), PUBLISH_CHUNK):
            await publisher.publish(events[start : start + PUBLISH_CHUNK])
            if len(events) > PUBLISH_CHUNK:
                say(f"{dataset}: {min(start + PUBLISH_CHUNK, len(events))}/{len(events)} acked")
        dead = len(result.items) - len(events)
        say(
            f"{dataset}: {len(result.items)} record(s) read, {len(events)} event(s) acked by "
            f"Kafka{f', {dead} dead-lettered' if dead else ''} (version {result.version_id or '-'})"
        )
        metrics.records.labels(dataset).inc(len(result.items))
        metrics.events.labels(dataset).inc(len(events))
        report.records[dataset] = len(result.items)
        report.events.extend(e.id for e in events)
        if result.version_id:
            record.versions[dataset] = result.version_id
        run.done.append(dataset)
        await save(record)
    record.synced_through = run.started
    record.last_sync = clock()
    if record.gap is not None and record.gap.to <= run.started:
        record.gap = None
    record.run = None
    await save(record)
    report.requests = _location_requests(source) - requests_before
    report.service_config_requests = source.requests.get(SERVICE_CONFIG, 0) - shared_before
    report.duration_s = time.monotonic() - began
    metrics.requests.observe(report.requests)
    metrics.duration.labels(report.reason).observe(report.duration_s)
    return report


async def _normalize(
    publisher: EventSink,
    tenant: str,
    uid: str,
    dataset: Dataset,
    items: list[dict[str, Any]],
    info: SyncInfo,
    basis: str,
) -> list[CanonicalEvent]:
    """Synced events of ``items``; unusable records go to the DLQ (acked) instead."""
    events = []
    for item in items:
        try:
            events.append(synced_event(uid, dataset, item, sync=info, basis=basis))
        except NormalizationError as exc:
            await publisher.dead_letter(
                orjson.dumps(item),
                vendor="apple",
                reason=exc.reason,
                detail=f"sync {dataset}: {exc.detail}",
                tenant=tenant,
                content_type="application/json",
            )
    return events
