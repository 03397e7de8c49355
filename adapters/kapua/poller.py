"""One poll of one watched operation: unseen rows -> Kafka -> cursor; terminal state -> Kafka.

Guarantees of :meth:`OperationPoller.poll`:

* rows are fetched in ``sentOn`` order with offset/limit paging, starting ``resort_window`` rows
  before the last known end (device clocks may insert rows earlier); if Kapua's ``totalCount``
  shows rows not accounted for, the scan restarts at offset 0 once;
* one list call per poll answers both questions (``askTotalCount``: how many rows exist; the
  page from ``resort_window`` rows before the known end: which are new), instead of a ``_count``
  followed by a list; a quiet operation costs one request per poll;
* every row returned by Kapua and not yet published is published (even when a later page fails),
  oldest first, and only after Kafka acked those events is the cursor (``seen`` ids) advanced in
  memory and checkpointed in the state topic;
* a COMPLETED/FAILED row that is the newest row while the operation record is still RUNNING is
  held back (not published, not in ``seen``) for up to ``terminal_grace_s``: Kapua writes the row
  before it closes the operation, so it usually becomes the terminal event (same id as when only
  the operation record is seen). The raw row is kept as ``held`` in the cursor checkpointed in
  the poll that found it, so that a restart (even after a SIGKILL) or the next owner still
  publishes it after Kapua deleted it, the grace then counting from when it is next listed. A
  row that did not close it (status and ``endedOn`` = its ``sentOn``:
  :func:`adapters.kapua.normalize.closed_by`, the rule ``dlq replay`` applies too) was a phase
  end and is published as progress, before the terminal event if the operation ended;
* the operation record is read on the first poll when it has no rows (it may have closed already),
  when rows disappear (Kapua deletes them when it closes the operation), when a COMPLETED/FAILED
  row is seen, and after ``operation_check_interval_s`` without new rows (a record that changes
  while rows keep flowing is RUNNING; a close deletes the rows). A closed operation gets exactly
  one terminal event id (:func:`broker.events.kapua_terminal_id`), published after all its
  progress events; then a ``done`` record is written and the operation is no longer watched;
* every other outcome is an event too (:mod:`adapters.kapua.normalize`): STALE ->
  ``mdm.operation.stale``; a 404 on the operation (deleted under us) -> ``mdm.operation.vanished``
  with the status last read, after the listed rows not yet published: a COMPLETED/FAILED one
  (held, or listed before that read) is dead-lettered (reason ``closing_unknown``, Kapua's 404
  answer in the letter): whether it closed the operation was on the record, which is gone, so no
  label is guessed and ``dlq replay`` reports it not replayable; the others are published as
  progress; a status the broker does not know -> ``mdm.unknown`` (once per
  status), and the watch ends ``unknown_status_grace_s`` after that status was first seen unless
  the operation moves on (a temporary status Kapua may add), a held COMPLETED/FAILED row first
  published as progress (the record did not end in its status); a row whose ``operationId`` or
  ``scopeId`` is not the watched operation's is dead-lettered (reason ``mismatch``), not published;
* a row that fails validation is dead-lettered (reason ``schema``); a COMPLETED/FAILED one only
  once the operation record was read (it ended, or ``terminal_grace_s`` passed, or it was
  deleted), with that record in the letter (``kapua-operation``), so that ``dlq replay`` maps it
  as this poller would have mapped the valid row (:mod:`adapters.kapua.replay`); until then the
  raw row is kept in the cursor checkpointed in the state topic (written in the poll that found
  it), so that a restart or the next owner dead-letters it even after Kapua deleted it (the grace
  then counts from the reload);
* only the owner writes: after revocation (``op.owned`` false) nothing is checkpointed; a cursor
  write that failed is retried at the next poll (``op.dirty``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from adapters.kapua.client import KapuaClient
from adapters.kapua.cursors import cursor_value, done_value, op_key
from adapters.kapua.errors import KapuaNotFoundError
from adapters.kapua.metrics import Closed, KapuaMetrics
from adapters.kapua.models import TERMINAL_STATUSES, Notification, Operation
from adapters.kapua.normalize import (
    closed_by,
    progress_event,
    terminal_event,
    unknown_status_event,
    vanished_event,
)
from adapters.kapua.replay import OPERATION, ROW, closing_unknown, letter_context, row_mismatch
from adapters.kapua.settings import KapuaSettings
from adapters.kapua.statestore import StateStore
from broker.events import CanonicalEvent
from broker.metrics import RejectReason
from broker.sink import EventSink

Row = tuple[Notification, dict[str, Any]]

log = logging.getLogger(__name__)


@dataclass
class WatchedOp:
    """In-memory state of one owned operation (its cursor mirrors the last checkpoint)."""

    scope_id: str
    device_id: str
    operation_id: str
    partition: int
    count: int = -1
    seen: list[str] = field(default_factory=list)
    seen_set: set[str] = field(default_factory=set)
    interval_s: float = 0.0
    last_check: float = float("-inf")
    pending_since: float | None = None
    closed: bool = False
    held: Row | None = None  # a COMPLETED/FAILED row (and its raw JSON) not yet explained
    held_since: float | None = None  # None: reloaded, the grace starts when it is next listed
    # COMPLETED/FAILED rows that failed validation: id -> (raw row, detail, first seen; None when
    # reloaded from the cursor). Their dead letter waits, like a held row, for the operation record
    # that says whether they closed the operation; the record goes into the letter so that a
    # replay decides as the poller would. Checkpointed with the cursor: Kapua deletes the rows.
    suspects: dict[str, tuple[dict[str, Any], str, float | None]] = field(default_factory=dict)
    dead_lettered: bool = False
    owned: bool = True  # False once revoked: nothing is written for it any more
    dirty: bool = False  # the in-memory cursor is ahead of the last acked checkpoint
    last_status: str | None = None  # the operation record's status when last read
    unknown_status: str | None = None  # an unknown status already published as mdm.unknown
    unknown_since: float | None = None
    productive_at: float | None = None  # when a poll last published
    rows_at: float = float("-inf")  # when a poll last found new rows
    last_row_status: str | None = None  # status of the newest row seen
    row_gap_s: float | None = None  # moving average of the time between its rows

    def __post_init__(self) -> None:
        self.seen_set = set(self.seen)

    @property
    def key(self) -> str:
        return op_key(self.scope_id, self.operation_id)

    def restore_suspects(self, suspects: Mapping[str, tuple[dict[str, Any], str]]) -> bool:
        """Take back the invalid COMPLETED/FAILED rows of a cursor (a restart, or a previous
        owner's straggler write) that are not dead-lettered (``seen``) or waiting already; their
        grace starts when they are next polled. Returns whether any was taken."""
        taken = False
        for rid, (raw, detail) in suspects.items():
            if rid not in self.seen_set and rid not in self.suspects:
                self.suspects[rid] = (raw, detail, None)
                taken = True
        return taken

    def restore_held(self, raw: dict[str, Any]) -> None:
        """Take back the held row of a cursor (a restart, or a previous owner's straggler write)
        unless it was published or dead-lettered since. A row the current mapping rejects waits
        as a suspect instead (dead-lettered with the operation record)."""
        rid = raw.get("id")
        if not isinstance(rid, str) or rid in self.seen_set or rid in self.suspects:
            return
        if self.held is not None:
            return  # ours is newer: the one row we hold is the newest row we listed
        try:
            self.held, self.held_since = (Notification.model_validate(raw), raw), None
        except ValidationError as exc:
            detail = f"notification of operation {self.operation_id}: {exc.error_count()} error(s)"
            self.suspects[rid] = (raw, detail, None)

    def mark_seen(self, ids: list[str]) -> None:
        for i in ids:
            if i not in self.seen_set:
                self.seen_set.add(i)
                self.seen.append(i)
                self.dirty = True


@dataclass
class PollResult:
    published: int = 0
    closed: bool = False
    held: bool = False  # a terminal-looking row waits for the operation record: poll again soon


class OperationPoller:
    """Polls operations with a shared client, publisher and state writer."""

    def __init__(
        self,
        settings: KapuaSettings,
        client: KapuaClient,
        publisher: EventSink,
        metrics: KapuaMetrics,
        store: StateStore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s = settings
        self._client = client
        self._publisher = publisher
        self._state = store
        self._metrics = metrics
        self._clock = clock

    async def poll(self, op: WatchedOp) -> PollResult:
        """One poll (see module docstring). Raises AdapterError / PublishError on failure; the
        cursor then still reflects exactly what was acked."""
        result = PollResult()
        if op.dirty:
            await self._checkpoint(op)  # a checkpoint that failed earlier: retried first
        now = self._clock()
        first = op.last_check == float("-inf")
        rows, total = await self._scan(op, result)  # one list call: new rows + totalCount
        if rows:
            op.rows_at = now
            op.last_row_status = max(rows, key=lambda pair: pair[0].sort_key())[0].status
            if op.pending_since is None:
                op.pending_since = now
        await self._publish_rows(op, rows, result)
        if result.closed:
            return result
        count = op.count if total is None else total
        check = (
            # quiet for a while: STALE or an unknown status show only on the record
            (
                not first
                and now - max(op.last_check, op.rows_at) >= self._s.operation_check_interval_s
            )
            or (op.count > 0 and count < op.count)  # rows vanished: Kapua closes by deleting
            or (total is not None and total < len(op.seen_set) and not first)
            or (first and count == 0)  # nothing to read: maybe closed before we came
            or op.unknown_since is not None
            or bool(op.suspects)  # invalid terminal-looking rows wait for the record
        )
        if first and not check:
            op.last_check = now  # rows flow: the record is read at the next periodic check
        changed = count != op.count or bool(rows)
        op.count = count
        if op.held is None:
            op.pending_since = None
        if changed or op.dirty:
            await self._checkpoint(op)
        if check:
            await self._check_operation(op, result, [op.held] if op.held else [])
        if op.suspects and not result.closed:
            result.held = True
        return result

    # -- rows --------------------------------------------------------------------------------

    async def _scan(self, op: WatchedOp, result: PollResult) -> tuple[list[Row], int | None]:
        """Fetch unseen rows. On a failed page, publish what was fetched, then re-raise."""
        limit = self._s.page_limit
        known = min(max(op.count, 0), len(op.seen_set))
        offset = max(0, known - self._s.resort_window)
        restarted = offset == 0
        found: dict[str, Row] = {}
        total: int | None = None
        try:
            for _ in range(10_000):  # bounded: far more pages than any operation has rows
                page = await self._client.list_notifications(
                    op.scope_id, op.device_id, op.operation_id, offset, limit
                )
                total = page.total_count
                for raw in page.items:
                    row = await self._parse(op, raw)
                    if row is not None and row.id not in op.seen_set:
                        found[row.id] = (row, raw)
                if page.limit_exceeded and page.items:
                    offset += len(page.items)
                    continue
                accounted = len(op.seen_set) + len(found) + len(op.suspects)
                unaccounted = total is not None and total > accounted
                if unaccounted and not restarted:
                    restarted, offset = True, 0  # a row was inserted before our window
                    continue
                break
        except Exception:
            if found:
                await self._publish_rows(op, list(found.values()), result)
                await self._checkpoint(op)
            raise
        return list(found.values()), total

    async def _parse(self, op: WatchedOp, raw: dict[str, Any]) -> Notification | None:
        """The row, or None after dead-lettering it (schema violation, or a row that belongs to
        another operation or scope than the URL it was listed under). A COMPLETED/FAILED row that
        fails validation is kept in ``op.suspects`` instead, until the operation record is read
        (:meth:`_letter_suspects`)."""
        rid = raw.get("id")
        if isinstance(rid, str) and (rid in op.seen_set or rid in op.suspects):
            return None  # published, dead-lettered or waiting for the record
        try:
            row = Notification.model_validate(raw)
        except ValidationError as exc:
            reason = RejectReason.SCHEMA
            detail = f"notification of operation {op.operation_id}: {exc.error_count()} error(s)"
            if isinstance(rid, str) and raw.get("status") in TERMINAL_STATUSES:
                op.suspects[rid] = (raw, detail, self._clock())
                op.dirty = True  # checkpointed in this poll: durable until dead-lettered
                return None
        else:
            if row.operation_id == op.operation_id and row.scope_id == op.scope_id:
                return row
            reason = RejectReason.MISMATCH
            detail = row_mismatch(row, op.scope_id, op.operation_id)
            log.warning("kapua: %s; dead-lettered", detail)
        await self._dead_letter_row(op, raw, reason, detail)
        return None

    async def _dead_letter_row(
        self,
        op: WatchedOp,
        raw: dict[str, Any],
        reason: RejectReason,
        detail: str,
        record: dict[str, Any] | None = None,
        vanished: dict[str, Any] | None = None,
    ) -> None:
        """Dead-letter one row with its polling context (and the operation record, when read, or
        the 404 answer when the operation was deleted first)."""
        await self._publisher.dead_letter(
            orjson.dumps(raw),
            vendor="kapua",
            reason=reason.value,
            detail=detail,
            tenant=op.scope_id,
            content_type="application/json",
            context=letter_context(
                ROW, op.scope_id, op.device_id, op.operation_id, record, vanished
            ),
        )
        rid = raw.get("id")
        if isinstance(rid, str):
            op.mark_seen([rid])

    async def _letter_suspects(
        self,
        op: WatchedOp,
        record: dict[str, Any] | None,
        *,
        all_now: bool,
        vanished: dict[str, Any] | None = None,
    ) -> None:
        """Dead-letter the invalid COMPLETED/FAILED rows with the operation record just read:
        all of them once the operation ended (or vanished: ``record`` None and ``vanished`` the
        404 answer), else those held for ``terminal_grace_s`` (a phase end, as for a valid row)."""
        now = self._clock()
        for rid, (raw, detail, since) in list(op.suspects.items()):
            if since is None and not all_now:  # reloaded: the grace counts from now
                op.suspects[rid] = (raw, detail, now)
                continue
            if not all_now and since is not None and now - since < self._s.terminal_grace_s:
                continue
            await self._dead_letter_row(op, raw, RejectReason.SCHEMA, detail, record, vanished)
            del op.suspects[rid]

    async def _publish_rows(self, op: WatchedOp, rows: list[Row], result: PollResult) -> None:
        """Publish rows oldest first. A COMPLETED/FAILED row makes the poller read the operation:

        * operation ended -> the rows before it, then :meth:`_check_operation` with it and the
          rows after it (the one that closed the operation folds into the terminal event);
        * operation RUNNING and rows follow it -> a phase ended (DEPLOY-V2 download before
          install): published as progress, like the rows after it;
        * operation RUNNING and it is the newest row -> Kapua may be closing the operation right
          now (the row is written before the operation is updated): the row is held, unpublished
          and not in the cursor, for ``terminal_grace_s``; then it counts as a phase end.
        """
        rows = sorted(rows, key=lambda pair: pair[0].sort_key())
        batch: list[CanonicalEvent] = []
        ids: list[str] = []
        for index, (row, raw) in enumerate(rows):
            if row.status in TERMINAL_STATUSES:
                await self._send(op, batch, ids, result)
                batch, ids = [], []
                if await self._check_operation(op, result, rows[index:]):
                    return
                last = index == len(rows) - 1
                now = self._clock()
                if last and (op.held is None or op.held[0].id != row.id or op.held_since is None):
                    op.held, op.held_since = (row, raw), now
                if last and now - (op.held_since or now) < self._s.terminal_grace_s:
                    result.held = True
                    return
                op.held = op.held_since = None
            batch.append(progress_event(op.scope_id, op.device_id, row, raw))
            ids.append(row.id)
        await self._send(op, batch, ids, result)

    async def _send(
        self, op: WatchedOp, batch: list[CanonicalEvent], ids: list[str], result: PollResult
    ) -> None:
        if not batch:
            return
        for event in batch:
            self._metrics.broker.notifications_received.labels("kapua", event.type.value).inc()
        await self._publisher.publish(batch)  # raises PublishError: cursor not advanced
        op.mark_seen(ids)
        result.published += len(batch)

    async def _checkpoint(self, op: WatchedOp) -> None:
        """Store the cursor (owner only; raises PublishError, ``op.dirty`` then stays set)."""
        if not op.owned:
            log.info("kapua: %s no longer owned; cursor not written", op.operation_id)
            return
        op.dirty = True
        suspects = {rid: (raw, detail) for rid, (raw, detail, _) in op.suspects.items()}
        held = op.held[1] if op.held else None
        value = cursor_value(
            op.scope_id, op.device_id, op.operation_id, op.count, op.seen, suspects, held
        )
        await self._state.put(op.key, "cursor", value)
        op.dirty = False

    # -- the operation record ----------------------------------------------------------------

    async def _check_operation(self, op: WatchedOp, result: PollResult, rows: list[Row]) -> bool:
        """Read the operation; publish how it ended if it did. Returns whether the watch ended.

        ``rows``: listed rows not yet published (a held COMPLETED/FAILED row, or a COMPLETED/FAILED
        row and those after it). If the operation ended, each is published as progress except
        the one that closed it (:func:`adapters.kapua.normalize.closed_by`, as ``dlq replay``
        decides), which folds into the terminal event published after them.
        """
        op.last_check = self._clock()
        try:
            raw = await self._client.get_operation(op.scope_id, op.device_id, op.operation_id)
        except KapuaNotFoundError as exc:
            log.warning(
                "kapua operation %s of device %s was deleted while watched (last status %s)",
                op.operation_id,
                op.device_id,
                op.last_status,
            )
            last = op.last_status or op.last_row_status  # the record's, else the newest row's
            await self._letter_suspects(op, None, all_now=True, vanished=exc.info)
            await self._rows_of_vanished(op, rows, exc.info, result)
            event = vanished_event(op.scope_id, op.device_id, op.operation_id, last, exc.info)
            await self._publish_outcome(op, event, "DELETED", Closed.DELETED, result)
            return True
        try:
            operation = Operation.model_validate(raw)
        except ValidationError as exc:
            await self._letter_suspects(op, None, all_now=False)
            if op.dead_lettered:
                return False
            await self._publisher.dead_letter(
                orjson.dumps(raw),
                vendor="kapua",
                reason=RejectReason.SCHEMA.value,
                detail=f"operation {op.operation_id}: {exc.error_count()} error(s)",
                tenant=op.scope_id,
                content_type="application/json",
                context=letter_context(OPERATION, op.scope_id, op.device_id, op.operation_id),
            )
            op.dead_lettered = True  # once per operation, not at every check
            return False
        op.last_status = operation.status
        await self._letter_suspects(op, raw, all_now=operation.ended)
        if operation.ended:
            row = next((r for r in rows if closed_by(operation, r[0])), None)
            phases = [r for r in rows if r is not row]
            batch = [progress_event(op.scope_id, op.device_id, r, r_raw) for r, r_raw in phases]
            await self._send(op, batch, [r.id for r, _ in phases], result)
            event = terminal_event(operation, raw, row[0] if row else None, row[1] if row else None)
            outcome = {"COMPLETED": Closed.COMPLETED, "FAILED": Closed.FAILED}.get(
                operation.status, Closed.STALE
            )
            await self._publish_outcome(op, event, operation.status, outcome, result)
            return True
        if operation.known:  # RUNNING
            op.unknown_status = op.unknown_since = None
            return False
        return await self._unknown_status(op, operation, raw, result, rows)

    async def _rows_of_vanished(
        self, op: WatchedOp, rows: list[Row], answer: dict[str, Any], result: PollResult
    ) -> None:
        """The listed rows not yet published of an operation deleted before its record was read
        (``answer``: Kapua's 404). A COMPLETED/FAILED row is dead-lettered, reason
        ``closing_unknown``: the record that said whether it closed the operation (terminal event)
        or ended a phase (progress) is gone, and a guess could mislabel it. The others are
        published as progress, as they would be had the record been read."""
        progress: list[Row] = []
        for row, raw in rows:
            if row.status in TERMINAL_STATUSES:
                log.warning(
                    "kapua: %s notification %s dead-lettered: %s",
                    row.status,
                    row.id,
                    closing_unknown(op.operation_id),
                )
                detail = f"notification {row.id}: {closing_unknown(op.operation_id)}"
                await self._dead_letter_row(
                    op, raw, RejectReason.CLOSING_UNKNOWN, detail, vanished=answer
                )
            else:
                progress.append((row, raw))
        batch = [progress_event(op.scope_id, op.device_id, r, r_raw) for r, r_raw in progress]
        await self._send(op, batch, [r.id for r, _ in progress], result)

    async def _unknown_status(
        self,
        op: WatchedOp,
        operation: Operation,
        raw: dict[str, Any],
        result: PollResult,
        rows: list[Row],
    ) -> bool:
        """Forward a status we do not know once; end the watch after ``unknown_status_grace_s``,
        first publishing ``rows`` and the held row as progress: the record did not end in their
        status, so none of them closed the operation (:func:`closed_by`)."""
        now = self._clock()
        if op.unknown_status != operation.status:
            event = unknown_status_event(operation, raw)
            self._metrics.broker.notifications_received.labels("kapua", event.type.value).inc()
            await self._publisher.publish([event])
            result.published += 1
            log.warning(
                "kapua operation %s has status %r, unknown to the broker: forwarded as mdm.unknown",
                op.operation_id,
                operation.status,
            )
            op.unknown_status, op.unknown_since = operation.status, now
        if now - (op.unknown_since or now) < self._s.unknown_status_grace_s:
            return False
        log.warning(
            "kapua operation %s still in unknown status %r after %.0fs: no longer watched",
            op.operation_id,
            operation.status,
            self._s.unknown_status_grace_s,
        )
        await self._letter_suspects(op, raw, all_now=True)  # the cursor goes with the watch
        pending = {r.id: (r, r_raw) for r, r_raw in ([op.held] if op.held else []) + rows}
        phases = sorted(pending.values(), key=lambda pair: pair[0].sort_key())
        batch = [progress_event(op.scope_id, op.device_id, r, r_raw) for r, r_raw in phases]
        await self._send(op, batch, [r.id for r, _ in phases], result)
        await self._finish(op, operation.status, Closed.UNKNOWN_STATUS, result)
        return True

    async def _publish_outcome(
        self,
        op: WatchedOp,
        event: CanonicalEvent,
        status: str,
        outcome: Closed,
        result: PollResult,
    ) -> None:
        self._metrics.broker.notifications_received.labels("kapua", event.type.value).inc()
        await self._publisher.publish([event])
        result.published += 1
        await self._finish(op, status, outcome, result)

    async def _finish(
        self, op: WatchedOp, status: str, outcome: Closed, result: PollResult
    ) -> None:
        """The ``done`` record (owner only), then the watch and cursor keys are tombstoned."""
        if op.owned:
            done = done_value(op.scope_id, op.device_id, op.operation_id, status)
            await self._state.put(op.key, "done", done)
            await self._state.delete(op.key, ("watch", "cursor"))
        op.closed = True
        op.dirty = False
        result.closed = True
        self._metrics.operations_closed.labels(outcome.value).inc()
