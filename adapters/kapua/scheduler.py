"""Owns the operations of this instance's state partitions and schedules their polls.

* Operations come from the shard consumer (loaded on assignment, or registered live by any
  instance) and from :meth:`PollScheduler.register` (discovery, watch requests).
* Adaptive intervals: each operation learns the time between its rows (moving average over
  productive polls); after a poll that published, the next comes after that time multiplied by
  ``poll_rows_target`` (so a poll usually finds that many rows, and most polls find one), within
  ``poll_interval_min_s`` .. ``poll_interval_max_s``; each quiet poll multiplies the interval by
  1.5 up to ``poll_interval_max_s``; a held terminal row is re-polled after the minimum; a failed
  poll backs off (doubling, at least ``backoff_base_s``).
* Each poll is a one-shot task of the supervisor (``kapua-poll``): an unexpected exception is
  logged, counted in ``mdm_broker_task_failures_total{task="kapua-poll"}`` and shown in /readyz;
  the operation is polled again after ``poll_interval_max_s``.
* At most ``max_concurrent_requests`` polls run at once (requests are also rate-limited by the
  client); one operation is never polled twice at the same time.
* While Kafka is unhealthy no poll starts (cursors freeze); polls resume when it is healthy.
* On revocation the operations of the revoked partitions stop being scheduled; in-flight polls
  finish (they checkpoint themselves) within ``session_timeout_s / 2``, then are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Any

from adapters.kapua.cursors import (
    OpRecord,
    OpSlots,
    merge,
    op_key,
    parse_record_key,
    partition_for,
    resolve_all,
    watch_value,
)
from adapters.kapua.errors import KapuaAuthError
from adapters.kapua.metrics import KapuaMetrics
from adapters.kapua.poller import OperationPoller, WatchedOp
from adapters.kapua.settings import KapuaSettings
from adapters.kapua.statestore import StateStore
from broker.errors import AdapterError, PublishError
from broker.health import KafkaHealth
from broker.shard import StateShard
from broker.supervisor import Supervisor

log = logging.getLogger(__name__)


class PollScheduler:
    """Implements the shard owner protocol and runs the poll loop."""

    def __init__(
        self,
        settings: KapuaSettings,
        poller: OperationPoller,
        store: StateStore,
        health: KafkaHealth,
        metrics: KapuaMetrics,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._s = settings
        self._supervisor = supervisor or Supervisor()  # standalone use: its own registry
        self._poller = poller
        self._store = store
        self._health = health
        self._metrics = metrics
        self.shard: StateShard | None = None
        self.ops: dict[str, WatchedOp] = {}
        self.done: dict[str, OpRecord] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)
        self._wake = asyncio.Event()
        self._recent: dict[str, float] = {}
        self._lag_at = 0.0
        self.auth_failed = False

    # -- ownership ---------------------------------------------------------------------------

    def owns(self, key: str) -> tuple[bool, int]:
        """Whether this instance owns ``key`` now (its partition is assigned and loaded)."""
        shard = self.shard
        if shard is None or shard.partition_count == 0:
            return False, -1
        partition = partition_for(key, shard.partition_count)
        return partition in shard.loaded, partition

    def owns_anything(self) -> bool:
        return bool(self.shard is not None and self.shard.loaded)

    async def on_loaded(self, partition: int, entries: dict[str, Any]) -> None:
        """A partition was read to its end (``entries``: newest value of each state key)."""
        slots: dict[str, OpSlots] = {}
        for stored_key, value in entries.items():
            merge(slots, stored_key, value)
        for key, record in resolve_all(slots).items():
            if record.kind == "done":
                self.done[key] = record
                continue
            op = WatchedOp(
                scope_id=record.scope_id,
                device_id=record.device_id,
                operation_id=record.operation_id,
                partition=partition,
                count=record.count if record.kind == "cursor" else -1,
                seen=list(record.seen),
            )
            op.restore_suspects(record.suspects)
            if record.held is not None:
                op.restore_held(record.held)
            self._add(op)
        self._update_gauge()

    async def on_revoked(self, partitions: set[int]) -> None:
        moving = [k for k, op in self.ops.items() if op.partition in partitions]
        for key in [k for k in self.done if self.done[k].at and self._part(k) in partitions]:
            self.done.pop(key, None)
        revoked = [op for op in self.ops.values() if op.partition in partitions]
        for key in moving:
            self.ops.pop(key, None)
        tasks = [t for k, t in self._inflight.items() if k in moving]
        if tasks:  # in-flight polls finish and checkpoint: the next owner starts from there
            _, pending = await asyncio.wait(tasks, timeout=self._s.session_timeout_s / 2)
            for task in pending:
                task.cancel()
        for op in revoked:
            op.owned = False  # a straggler must not write a cursor over the next owner's
        log.info("kapua: stopped watching %d operation(s) after revocation", len(moving))
        self._update_gauge()

    async def on_record(self, partition: int, key: str, value: Any) -> None:
        """A record of an owned partition written after it was loaded.

        A registration of an operation not yet known starts its watch. Cursor and done records
        are normally our own echoes (memory is authoritative); one written by the previous owner
        after we loaded (a straggler) can only add seen ids, invalid terminal rows it had still to
        dead-letter (``suspects``), the terminal row it held (``held``) or end the watch, never
        rewind it.
        """
        if value is None:
            return
        okey, kind = parse_record_key(key)
        record = OpRecord.from_value(value)
        if record is None or (kind is not None and record.kind != kind):
            return
        key = okey
        if key in self.done:
            return
        op = self.ops.get(key)
        if record.kind == "cursor" and op is not None:
            op.mark_seen([i for i in record.seen if i not in op.seen_set])
            for rid in [r for r in op.suspects if r in op.seen_set]:
                del op.suspects[rid]  # it dead-lettered them
            if op.restore_suspects(record.suspects):  # rows it had yet to dead-letter
                op.dirty = True
            if op.held is not None and op.held[0].id in op.seen_set:
                op.held = op.held_since = None  # it published it
            if record.held is not None and op.held is None:
                op.restore_held(record.held)  # a row it held: ours now
                op.dirty = True
            return
        if record.kind == "done" and op is not None and key not in self._inflight:
            del self.ops[key]
            self.done[key] = record
            self._update_gauge()
            return
        if record.kind != "watch" or op is not None:
            return
        self._add(
            WatchedOp(record.scope_id, record.device_id, record.operation_id, partition=partition)
        )
        self._update_gauge()

    def _part(self, key: str) -> int:
        shard = self.shard
        return partition_for(key, shard.partition_count) if shard and shard.partition_count else -1

    # -- registration ------------------------------------------------------------------------

    async def register(self, scope_id: str, device_id: str, operation_id: str, via: str) -> bool:
        """Make sure somebody watches this operation. Returns True when a record was written.

        Owned and unknown: watched at once, after its registration is acked in the state topic.
        Not owned: a registration record is written (once per operation within a while) so the
        owner picks it up. Raises PublishError when the state topic did not ack.
        """
        key = op_key(scope_id, operation_id)
        if key in self.ops or key in self.done:
            return False
        owned, partition = self.owns(key)
        now = time.monotonic()
        if not owned and now - self._recent.get(key, float("-inf")) < self._recent_ttl():
            return False
        await self._store.put(key, "watch", watch_value(scope_id, device_id, operation_id, via))
        if owned:
            if key not in self.ops and key not in self.done:
                self._add(WatchedOp(scope_id, device_id, operation_id, partition=partition))
                self._update_gauge()
        else:
            self._remember(key, now)
        return True

    def _recent_ttl(self) -> float:
        s = self._s
        return max(10 * s.discovery_interval_s, 60.0, s.closed_lookback_s + s.discovery_interval_s)

    def _remember(self, key: str, now: float) -> None:
        self._recent[key] = now
        if len(self._recent) > 200_000:
            horizon = now - self._recent_ttl()
            self._recent = {k: t for k, t in self._recent.items() if t >= horizon}

    # -- scheduling --------------------------------------------------------------------------

    def _add(self, op: WatchedOp) -> None:
        op.interval_s = self._s.poll_interval_min_s
        self.ops[op.key] = op
        self._push(time.monotonic(), op.key)

    def _push(self, at: float, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, key))
        self._wake.set()

    def _update_gauge(self) -> None:
        self._metrics.watched_operations.set(len(self.ops))

    async def run(self, stop: asyncio.Event) -> None:
        """Start due polls until ``stop`` is set, then wait for in-flight polls (bounded)."""
        while not stop.is_set():
            if not self._health.healthy:
                await self._health.wait_healthy(1.0)
                continue
            now = time.monotonic()
            if not self._heap or self._heap[0][0] > now:
                delay = (self._heap[0][0] - now) if self._heap else 1.0
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, 1.0))
                continue
            _, _, key = heapq.heappop(self._heap)
            op = self.ops.get(key)
            if op is None or key in self._inflight:
                continue
            await self._slots.acquire()
            if self.ops.get(key) is not op:
                self._slots.release()
                continue
            task = self._supervisor.run_once(
                "kapua-poll", self._poll(op), task_name=f"kapua-poll-{op.operation_id}"
            )
            self._inflight[key] = task
            if now - self._lag_at >= 1.0:
                self._lag_at = now
                self._lag()
        await self.drain(self._s.session_timeout_s / 2)

    async def drain(self, timeout_s: float) -> None:
        tasks = list(self._inflight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    def _lag(self) -> None:
        now = time.monotonic()
        oldest = min(
            (op.pending_since for op in self.ops.values() if op.pending_since is not None),
            default=None,
        )
        self._metrics.cursor_lag.set(0 if oldest is None else now - oldest)

    async def _poll(self, op: WatchedOp) -> None:
        s = self._s
        try:
            result = await self._poller.poll(op)
            self.auth_failed = False
            if result.closed:
                if self.ops.get(op.key) is op:
                    del self.ops[op.key]
                    shard_done = OpRecord(
                        "done", op.scope_id, op.device_id, op.operation_id, at=time.time()
                    )
                    self.done[op.key] = shard_done
                    self._update_gauge()
                return
            if result.held:
                op.interval_s = s.poll_interval_min_s
            elif result.published:
                op.interval_s = self._productive_interval(op, result.published)
            else:
                op.interval_s = min(s.poll_interval_max_s, op.interval_s * 1.5)
        except KapuaAuthError as exc:
            self.auth_failed = True
            op.interval_s = s.poll_interval_max_s
            log.error("kapua credentials refused: %s", exc)
        except AdapterError as exc:
            op.interval_s = min(s.poll_interval_max_s, max(op.interval_s * 2, s.backoff_base_s))
            log.info(
                "kapua poll of %s failed (%s); next in %.1fs", op.operation_id, exc, op.interval_s
            )
        except PublishError as exc:
            op.interval_s = max(op.interval_s, s.backoff_base_s)
            log.warning(
                "kapua poll of %s not published (%s); cursor unchanged", op.operation_id, exc
            )
        except Exception as exc:  # a bug: reported, and this operation's polls go on
            op.interval_s = s.poll_interval_max_s
            log.warning("kapua poll of %s crashed; next in %.0fs", op.operation_id, op.interval_s)
            self._supervisor.report_failure("kapua-poll", exc)
        finally:
            self._inflight.pop(op.key, None)
            self._slots.release()
        if self.ops.get(op.key) is op:
            self._push(time.monotonic() + op.interval_s, op.key)

    def _productive_interval(self, op: WatchedOp, rows: int) -> float:
        s = self._s
        now = time.monotonic()
        if op.productive_at is not None:
            gap = (now - op.productive_at) / rows
            op.row_gap_s = gap if op.row_gap_s is None else 0.5 * op.row_gap_s + 0.5 * gap
        op.productive_at = now
        target = (op.row_gap_s or 0.0) * s.poll_rows_target
        return min(s.poll_interval_max_s, max(s.poll_interval_min_s, target))

    def prune_done(self) -> list[str]:
        """Keys of done records older than ``done_retention_s`` (to be tombstoned)."""
        horizon = time.time() - self._s.done_retention_s
        return [k for k, r in self.done.items() if r.at < horizon]

    async def forget(self, key: str) -> None:
        """Tombstone every record of a closed operation (after ``done_retention_s``)."""
        await self._store.delete(key)
        self.done.pop(key, None)
