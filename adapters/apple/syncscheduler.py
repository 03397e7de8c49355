"""Decides when each owned location is synced, and runs those syncs.

Ownership: a location (tenant) is owned by the instance that owns the state-topic partition of its
key ``apple/sync/{tenant}`` (:class:`broker.shard.StateShard` drives this class). Only the owner
writes the location record and runs its syncs; on revocation its running sync is cancelled and
awaited before the partition is released, so no location is ever synced by two live instances
at once (a crash mid-sync resumes on the next owner from the stored progress).

A location is due for a sync when (earliest first):

* a sync was in progress when its previous owner stopped or died: resumed at once;
* it was never synced and ``initial_sync`` is on: at once (reason ``initial``);
* it has an open gap (reported non-2xx answers, or no broker alive since its last heartbeat when
  loaded): once the gap's last moment is ``retry_horizon_s`` old, so that Apple's last retry of
  a failed delivery has come and gone;
* the safety net: ``safety_net_interval_s`` after its last sync (0 disables).

Syncs start only while Kafka is healthy; a failed sync is retried after ``retry_s``.

A manual sync (``mdm-broker apple sync``, another process) never writes the location record: it
writes a :class:`ManualSync` entry, which the owner merges (:meth:`LocationRecord.adopt`: only
where its version is still the one the manual sync started from), stores and tombstones. So with a
broker running, both may publish the same records meanwhile (same ids; consumers skip them), and
the version the owner stores is always one whose changes were published. With no broker running,
the entry waits in the state topic for the next owner.

Gap reports (``apple/gap/...``, one key per reporting instance) are tombstoned by the owner once a
completed sync covers them (the report's last failure before that sync's start), so compaction
drops them. A report arriving after that decision still opens the gap, which is stored in the
location record at once: a tombstone that overtakes a newer report loses no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.apple.errors import error_code
from adapters.apple.gaps import GapRecorder
from adapters.apple.settings import AppleSyncSettings
from adapters.apple.syncmetrics import AppleSyncMetrics
from adapters.apple.syncrun import SyncReport, SyncSource, run_sync
from adapters.apple.syncstate import (
    GAP_PREFIX,
    MANUAL_PREFIX,
    SYNC_PREFIX,
    Gap,
    GapReport,
    LocationRecord,
    ManualSync,
    partition_of,
    sync_key,
    tenant_of_gap_key,
    tenant_of_manual_key,
)
from broker.errors import BrokerError
from broker.health import KafkaHealth
from broker.sink import StateSink
from broker.state import StateWriter
from broker.supervisor import Supervisor

log = logging.getLogger(__name__)

MAX_REPORTS = 1000


class NotOwnedError(BrokerError):
    """The location is not owned by this instance (another one syncs it)."""


class SyncScheduler:
    """Owner side of Apple sync (see the module docstring); a :class:`broker.shard.ShardOwner`."""

    def __init__(
        self,
        settings: AppleSyncSettings,
        sources: Mapping[str, SyncSource],
        uids: Mapping[str, str],
        publisher: StateSink,
        health: KafkaHealth,
        metrics: AppleSyncMetrics,
        recorder: GapRecorder,
        instance: str,
        clock: Callable[[], float] = time.time,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._s = settings
        self._supervisor = supervisor or Supervisor()  # standalone use: its own registry
        self._sources = sources
        self._uids = uids
        self._publisher = publisher
        self._writer = StateWriter(publisher)
        self._health = health
        self._metrics = metrics
        self._recorder = recorder
        self._instance = instance
        self._clock = clock
        self.partitions = 0
        self.records: dict[str, LocationRecord] = {}
        self._loaded_at: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._reports: dict[str, dict[str, float]] = {}
        """Per owned tenant, the gap-report keys seen and not yet tombstoned -> their ``to``."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._next_heartbeat = 0.0
        self._wake = asyncio.Event()
        self.reports: list[SyncReport] = []
        """Completed syncs (newest last, at most MAX_REPORTS), for operators and tests."""
        self.completed = asyncio.Condition()

    # -- ownership (driven by the state shard) ----------------------------------------------

    def _tenants_in(self, partition: int) -> list[str]:
        if self.partitions <= 0:
            return []
        return [t for t in self._sources if partition_of(sync_key(t), self.partitions) == partition]

    def set_partition_count(self, count: int) -> None:
        self.partitions = count

    async def on_loaded(self, partition: int, entries: dict[str, Any]) -> None:
        now = self._clock()
        for tenant in self._tenants_in(partition):
            record = LocationRecord.from_value(entries.get(sync_key(tenant)))
            if record is None:
                record = LocationRecord(tenant)
            else:
                last = record.last_alive()
                if last is None or now - last > 2 * self._s.heartbeat_s:
                    self._open(record, Gap(last if last is not None else now, now, "restart"))
            manual = []
            for key, value in entries.items():
                if key.startswith(GAP_PREFIX) and tenant_of_gap_key(key) == tenant:
                    self._merge_report(record, key, value)
                if key.startswith(MANUAL_PREFIX) and tenant_of_manual_key(key) == tenant:
                    self._adopt(record, value)
                    manual.append(key)
            record.owner, record.alive_at, record.stopped_at = self._instance, now, None
            self.records[tenant] = record
            self._loaded_at[tenant] = now
            self._gauge(tenant)
            log.info("apple sync: now owning tenant %r (%s)", tenant, self._describe(record))
            with contextlib.suppress(BrokerError):  # the heartbeat rewrites it
                await self._save(record)
                for key in manual:  # merged and stored: the entry has served
                    await self._writer.delete(key)
                await self._drop_closed_reports(record)
        self._metrics.owned.set(len(self.records))
        self._wake.set()

    async def on_revoked(self, partitions: set[int]) -> None:
        moving = [
            t for t in self.records if partition_of(sync_key(t), self.partitions) in partitions
        ]
        tasks = [self._tasks[t] for t in moving if t in self._tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._s.session_timeout_s / 2)
        for tenant in moving:
            self.records.pop(tenant, None)
            self._loaded_at.pop(tenant, None)
            self._reports.pop(tenant, None)
            self._metrics.gap_open_since.labels(tenant).set(0)
        self._metrics.owned.set(len(self.records))
        if moving:
            log.info("apple sync: released %d location(s)", len(moving))

    async def on_record(self, partition: int, key: str, value: Any) -> None:
        if key.startswith(MANUAL_PREFIX) and value is not None:
            await self._on_manual(key, value)
            return
        if not key.startswith(GAP_PREFIX) or value is None:
            return  # our own location records echo back: memory is authoritative
        tenant = tenant_of_gap_key(key)
        record = self.records.get(tenant) if tenant else None
        if record is not None:
            self._merge_report(record, key, value)
            self._gauge(record.tenant)
            self._wake.set()
            try:  # the gap is in the location record before any report of it is tombstoned
                await self._save(record)
                await self._drop_closed_reports(record)  # one that came late, already covered
            except BrokerError as exc:
                log.warning("apple sync: gap of %r not stored yet: %s", record.tenant, exc)

    async def _on_manual(self, key: str, value: Any) -> None:
        """A manual sync's result: adopted (see the module docstring), stored, tombstoned."""
        tenant = tenant_of_manual_key(key)
        record = self.records.get(tenant) if tenant else None
        if record is None:
            return  # not ours (yet): the owner that loads the partition merges it
        self._adopt(record, value)
        try:
            await self._save(record)
            await self._writer.delete(key)
        except BrokerError as exc:  # the entry stays; merged again when reloaded
            log.warning("apple sync: manual sync result of %r not stored: %s", tenant, exc)

    @staticmethod
    def _adopt(record: LocationRecord, value: Any) -> None:
        manual = ManualSync.from_value(value)
        if manual is None or manual.tenant != record.tenant:
            return
        taken = record.adopt(manual)
        log.info(
            "apple sync: manual sync of %r merged; versions taken for %s",
            record.tenant,
            ", ".join(taken) or "nothing (this instance synced meanwhile, or nothing changed)",
        )

    def _merge_report(self, record: LocationRecord, key: str, value: Any) -> None:
        report = GapReport.from_value(value)
        if report is not None:
            self._reports.setdefault(record.tenant, {})[key] = report.to
            self._open(record, Gap(report.since, report.to, "gap"))

    async def _drop_closed_reports(self, record: LocationRecord) -> None:
        """Tombstone the gap reports a completed sync covers (their ``to`` before the start of
        the last completed sync): compaction then removes those keys instead of keeping one per
        reporting instance for ever. Raises PublishError (the rest are retried later)."""
        covered = record.synced_through
        reports = self._reports.get(record.tenant)
        if covered is None or not reports:
            return
        for key, to in sorted(reports.items()):
            if to <= covered:
                await self._writer.delete(key)
                del reports[key]

    def _open(self, record: LocationRecord, gap: Gap) -> None:
        had = record.gap is not None
        record.add_gap(gap)
        if record.gap is not None and not had:
            self._metrics.gaps_opened.labels(gap.reason).inc()
            log.warning(
                "apple sync: tenant %r has a gap (%s) since %s; a sync will cover it",
                record.tenant,
                gap.reason,
                datetime.fromtimestamp(gap.since, UTC).isoformat(timespec="seconds"),
            )

    def _gauge(self, tenant: str) -> None:
        record = self.records.get(tenant)
        since = record.gap.since if record is not None and record.gap is not None else 0.0
        self._metrics.gap_open_since.labels(tenant).set(since)

    @staticmethod
    def _describe(record: LocationRecord) -> str:
        if record.run is not None:
            return f"resuming {record.run.reason} sync"
        if record.gap is not None:
            return f"{record.gap.reason} gap open"
        return "up to date" if record.synced_through is not None else "never synced"

    # -- scheduling -------------------------------------------------------------------------

    def due(self, tenant: str) -> tuple[float, str] | None:
        """(when, reason) of the tenant's next sync, or None when nothing is scheduled."""
        record = self.records.get(tenant)
        if record is None:
            return None
        now = self._clock()
        if record.run is not None:
            when, reason = 0.0, record.run.reason
        elif record.synced_through is None and self._s.initial_sync:
            when, reason = 0.0, "initial"
        else:
            candidates = []
            if record.gap is not None:
                candidates.append((record.gap.to + self._s.retry_horizon_s, record.gap.reason))
            if self._s.safety_net_interval_s > 0:
                base = record.last_sync or self._loaded_at.get(tenant, now)
                candidates.append((base + self._s.safety_net_interval_s, "safety_net"))
            if not candidates:
                return None
            when, reason = min(candidates)
        return max(when, self._retry_at.get(tenant, 0.0)), reason

    async def run(self, stop: asyncio.Event) -> None:
        """Start due syncs, write heartbeats and gap reports, until ``stop`` is set."""
        while not stop.is_set():
            now = self._clock()
            if self._health.healthy:
                self._start_due(now)
                if now >= self._next_heartbeat:
                    self._next_heartbeat = now + self._s.heartbeat_s
                    await self._heartbeat()
                if self._recorder.pending and self.partitions > 0:
                    await self._recorder.flush(self._writer, self.partitions)
            wakeups = [self._next_heartbeat]
            for tenant in self.records:
                due = self.due(tenant)
                if due is not None and tenant not in self._tasks:
                    wakeups.append(due[0])
            timeout = max(0.05, min(wakeups) - self._clock())
            if not self._health.healthy or self._recorder.pending:
                timeout = min(timeout, 0.5)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await _first(stop.wait(), self._wake.wait())

    def wake(self) -> None:
        self._wake.set()

    def _start_due(self, now: float) -> None:
        for tenant in list(self.records):
            if len(self._tasks) >= self._s.max_concurrent_locations:
                return
            if tenant in self._tasks:
                continue
            due = self.due(tenant)
            if due is not None and due[0] <= now:
                self._spawn(tenant, due[1])

    def _spawn(self, tenant: str, reason: str) -> asyncio.Task[None]:
        task = self._supervisor.run_once(
            "apple-sync-run", self._sync(tenant, reason), task_name=f"apple-sync-{tenant}"
        )
        self._tasks[tenant] = task
        return task

    async def _sync(self, tenant: str, reason: str) -> None:
        record = self.records[tenant]
        try:
            report = await run_sync(
                record,
                reason,
                source=self._sources[tenant],
                default_uid=self._uids.get(tenant, tenant),
                publisher=self._publisher,
                save=self._save,
                metrics=self._metrics,
                parallel=self._s.max_parallel_pages,
                clock=self._clock,
            )
        except asyncio.CancelledError:
            log.info("apple sync of %r cancelled (progress kept in the state topic)", tenant)
            raise
        except NotOwnedError:
            log.info("apple sync of %r stopped: the location moved to another instance", tenant)
            return
        except Exception as exc:  # AdapterError, PublishError, or a bug: retry later, logged
            code = error_code(exc)
            self._metrics.errors.labels(code).inc()
            self._metrics.syncs.labels(record.run.reason if record.run else reason, "error").inc()
            self._retry_at[tenant] = self._clock() + self._s.retry_s
            if isinstance(exc, BrokerError):
                log.warning("apple sync of %r failed (%s), retrying later: %s", tenant, code, exc)
            else:  # a bug: logged with its traceback and counted as a task failure
                log.warning("apple sync of %r failed unexpectedly; retrying later", tenant)
                self._supervisor.report_failure("apple-sync-run", exc)
            return
        finally:
            self._tasks.pop(tenant, None)
            self._wake.set()
        self._retry_at.pop(tenant, None)
        try:
            await self._drop_closed_reports(record)
        except BrokerError as exc:  # tombstoned after the next sync or load
            log.warning("apple sync: covered gap reports of %r not deleted: %s", tenant, exc)
        self._metrics.syncs.labels(report.reason, "ok").inc()
        self._gauge(tenant)
        self.reports.append(report)
        del self.reports[:-MAX_REPORTS]
        log.info(
            "apple sync of %r done (%s): %d request(s), records %s, %d event(s) in %.2fs",
            tenant,
            report.reason,
            report.requests,
            report.records,
            len(report.events),
            report.duration_s,
        )
        async with self.completed:
            self.completed.notify_all()

    async def sync_now(self, tenant: str, reason: str = "manual") -> SyncReport:
        """Run a sync of an owned location now (waits for one already running to finish first).

        Raises :class:`NotOwnedError` when another instance owns it, and the sync's errors.
        """
        running = self._tasks.get(tenant)
        if running is not None:
            await asyncio.wait({running})
        if tenant not in self.records:
            raise NotOwnedError(f"tenant {tenant!r} is not owned by this instance")
        count = len(self.reports)
        task = self._spawn(tenant, reason)
        await task
        if len(self.reports) == count or self.reports[-1].tenant != tenant:
            raise BrokerError(f"sync of {tenant!r} failed; see the log")
        return self.reports[-1]

    # -- durability -------------------------------------------------------------------------

    async def _save(self, record: LocationRecord) -> None:
        if self.records.get(record.tenant) is not record:
            raise NotOwnedError(f"tenant {record.tenant!r} moved to another instance")
        record.alive_at = self._clock()
        await self._writer.put(sync_key(record.tenant), record.to_value())

    async def _heartbeat(self) -> None:
        for record in list(self.records.values()):
            try:
                await self._save(record)
            except NotOwnedError:
                continue
            except BrokerError as exc:
                log.warning("apple sync heartbeat not stored: %s", exc)
                return

    async def stop(self, timeout_s: float) -> None:
        """Cancel running syncs (their progress is stored) and record a clean stop."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s / 2)
        now = self._clock()
        for record in list(self.records.values()):
            record.stopped_at = now
            try:
                async with asyncio.timeout(max(0.5, timeout_s / 2)):
                    await self._writer.put(sync_key(record.tenant), record.to_value())
            except (BrokerError, TimeoutError) as exc:
                log.warning("apple sync: clean stop of %r not recorded: %s", record.tenant, exc)
                break


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["SYNC_PREFIX", "NotOwnedError", "SyncScheduler"]
