"""The simulated Kapua: accounts, tokens, devices, operations and their notification rows.

Behaviour copied from Kapua (VENDOR_NOTES section 3):

* access tokens expire after ``token_ttl_s`` and refresh tokens after ``refresh_ttl_s``; a refresh
  invalidates the old access token even if it was still valid; a refresh with an unknown or expired
  refresh token fails;
* every device NOTIFY creates one notification row (RUNNING with rising progress);
* an operation can also end in a status set on the operation record itself, without a NOTIFY:
  ``STALE`` (Kapua's enum has it; the device never sends it) or any other string (a status a future
  Kapua may add, e.g. ``CANCELLED``); its rows are then left in place;
* a COMPLETED or FAILED NOTIFY closes the operation (``endedOn`` = its sentOn, ``status``, ``log`` =
  ``"<sentOn> - <message>\\n"`` of every row with a message, in sentOn order) and DELETES every row
  of the operation (after ``terminal_row_linger_s``, 0 = at once, as in Kapua).

Not Kapua: the record of every row returned to a client (``returned``) and of which client
(User-Agent) polled which operation, used by tests to check the broker.
"""

from __future__ import annotations

import base64
import heapq
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TERMINAL = ("COMPLETED", "FAILED")


def kapua_id() -> str:
    """A base64url (no padding) big-integer id, like Kapua's ``kapuaId``."""
    value = secrets.randbits(63) | (1 << 62)
    return base64.urlsafe_b64encode(value.to_bytes(8, "big")).rstrip(b"=").decode()


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimConfig:
    """Knobs of the simulator (defaults are Kapua's where Kapua has one)."""

    scope_id: str = "AQ"
    username: str = "kapua-sys"
    password: str = "kapua-password"  # noqa: S105 - the simulator's well-known demo credential
    api_keys: tuple[str, ...] = ("12345678kapua-key",)
    token_ttl_s: float = 1800.0
    refresh_ttl_s: float = 18000.0
    devices: int = 0
    step_interval_s: float = 5.0
    tick_s: float = 0.02
    terminal_row_linger_s: float = 0.0
    sent_on_skew_s: float = 0.0
    show_stack_trace: bool = False


@dataclass
class TokenRecord:
    token_id: str
    refresh_token: str
    scope_id: str
    user_id: str
    created: datetime
    expires: datetime
    refresh_expires: datetime
    invalidated: datetime | None = None


@dataclass
class Step:
    at: float  # monotonic
    status: str
    progress: int
    message: str
    resource: str = "download"
    closes: bool = False
    row: bool = True  # False: the status is set on the operation record, no NOTIFY row


@dataclass
class SimOperation:
    doc: dict[str, Any]
    steps: list[Step]
    next_step: int = 0
    close_at: float | None = None
    last_sent: datetime | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.doc["id"])


BAD_BODIES = ("non_json", "schema")


@dataclass
class Faults:
    fail_500_next: int = 0
    fail_500_rate: float = 0.0
    kinds: frozenset[str] = frozenset({"notifications", "operations", "devices"})
    bad_body: str | None = None  # "non_json" or "schema": 200 answers that are not Kapua's
    bad_body_kinds: frozenset[str] = frozenset({"devices"})


class SimState:
    """All simulated data; mutated only from the event loop (no locking needed)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tokens: dict[str, TokenRecord] = {}
        self.refresh_index: dict[str, str] = {}
        self.devices: dict[str, dict[str, dict[str, Any]]] = {config.scope_id: {}}
        self.operations: dict[str, SimOperation] = {}
        self.rows_by_id: dict[str, dict[str, Any]] = {}
        self.returned: dict[str, dict[str, Any]] = {}
        self.emitted: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, list[list[Any]]] = {}
        self.counters: dict[str, int] = {}
        self.faults = Faults()
        self.doomed: dict[str, str] = {}  # operation id -> row id: see delete_once_listed
        self._schedule: list[tuple[float, int, str]] = []
        self._seq = 0
        self.user_id = kapua_id()
        self.add_devices(config.scope_id, config.devices)

    # -- bookkeeping -------------------------------------------------------------------------

    def count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def record_poll(self, operation_id: str, client: str) -> None:
        segments = self.polls.setdefault(operation_id, [])
        if segments and segments[-1][0] == client:
            segments[-1][1] += 1
        else:
            segments.append([client, 1])

    def record_returned(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.returned[str(row["id"])] = row

    def bad_body(self, kind: str) -> str | None:
        """The broken-200 mode for a list of ``kind`` (None: answer normally)."""
        f = self.faults
        return f.bad_body if f.bad_body and kind in f.bad_body_kinds else None

    def take_fault(self, kind: str) -> bool:
        """Whether this request (of endpoint ``kind``) must fail with a 500."""
        f = self.faults
        if kind not in f.kinds:
            return False
        if f.fail_500_next > 0:
            f.fail_500_next -= 1
            return True
        return f.fail_500_rate > 0 and random.random() < f.fail_500_rate

    # -- tokens ------------------------------------------------------------------------------

    def issue_token(self) -> TokenRecord:
        created = now_utc()
        record = TokenRecord(
            token_id=_fake_jwt(self.user_id),
            refresh_token=str(uuid.uuid4()),
            scope_id=self.config.scope_id,
            user_id=self.user_id,
            created=created,
            expires=created + timedelta(seconds=self.config.token_ttl_s),
            refresh_expires=created + timedelta(seconds=self.config.refresh_ttl_s),
        )
        self.tokens[record.token_id] = record
        self.refresh_index[record.refresh_token] = record.token_id
        self.count("tokens_issued")
        return record

    def valid_token(self, token_id: str) -> TokenRecord | None:
        record = self.tokens.get(token_id)
        if record is None or record.invalidated is not None or record.expires <= now_utc():
            return None
        return record

    def refresh(self, token_id: str, refresh_token: str) -> TokenRecord | None:
        """Kapua's refresh: old access token invalidated regardless of its expiry."""
        old_id = self.refresh_index.get(refresh_token)
        old = self.tokens.get(old_id) if old_id else None
        if old is None or old.token_id != token_id or old.refresh_expires <= now_utc():
            return None
        if old.invalidated is not None:
            return None
        old.invalidated = now_utc()
        del self.refresh_index[refresh_token]
        self.count("refreshes")
        return self.issue_token()

    def expire_all_tokens(self) -> int:
        n = 0
        for record in self.tokens.values():
            if record.invalidated is None:
                record.invalidated = now_utc()
                n += 1
        return n

    # -- devices and operations --------------------------------------------------------------

    def add_devices(self, scope_id: str, count: int) -> list[str]:
        ids = []
        bucket = self.devices.setdefault(scope_id, {})
        for _ in range(count):
            ts = iso(now_utc())
            device_id = kapua_id()
            bucket[device_id] = {
                "type": "device",
                "id": device_id,
                "scopeId": scope_id,
                "createdOn": ts,
                "createdBy": self.user_id,
                "modifiedOn": ts,
                "modifiedBy": self.user_id,
                "optlock": 1,
                "clientId": f"device-{len(bucket):05d}",
                "status": "ENABLED",
                "displayName": f"Simulated device {len(bucket)}",
            }
            ids.append(device_id)
        return ids

    def start_operation(
        self,
        scope_id: str,
        device_id: str,
        *,
        steps: int,
        step_interval_s: float,
        fail: bool,
        resource: str = "download",
        jitter_s: float = 0.0,
        start_delay_s: float = 0.0,
        install: bool = False,
        end_status: str | None = None,
    ) -> SimOperation:
        """Start an operation: ``steps`` RUNNING rows, then COMPLETED or FAILED (which closes it).

        ``install``: Kapua's DEPLOY-V2 with download+install: the download phase ends with a
        COMPLETED row that does NOT close the operation; an install phase follows and closes it.
        ``end_status`` other than COMPLETED/FAILED (``STALE``, ``CANCELLED``, ...): after the
        RUNNING rows the operation record takes that status, with no NOTIFY row and rows kept.
        """
        if end_status in TERMINAL:
            fail, end_status = end_status == "FAILED", None
        started = now_utc()
        ts = iso(started)
        op_id = kapua_id()
        doc: dict[str, Any] = {
            "type": "deviceManagementOperation",
            "id": op_id,
            "scopeId": scope_id,
            "createdOn": ts,
            "createdBy": self.user_id,
            "modifiedOn": ts,
            "modifiedBy": self.user_id,
            "optlock": 1,
            "action": "EXECUTE",
            "appId": "DEPLOY-V2",
            "deviceId": device_id,
            "operationProperties": [
                {
                    "name": "kapua.package.download.uri",
                    "propertyType": "java.net.URI",
                    "propertyValue": "http://repo.example/pkg.dp",
                }
            ],
            "log": "",
            "operationId": kapua_id(),
            "resource": resource.upper(),
            "startedOn": ts,
            "status": "RUNNING",
        }
        base = time.monotonic() + start_delay_s
        phases = [resource, "install"] if install else [resource]
        plan: list[Step] = []
        for phase_index, phase in enumerate(phases):
            for i in range(steps):
                progress = min(99, (i * 100) // max(1, steps))
                plan.append(Step(0.0, "RUNNING", progress, f"{phase} {progress}%", phase))
            final_phase = phase_index == len(phases) - 1
            if final_phase and end_status is not None:
                last = plan[-1].progress if plan else 0
                plan.append(Step(0.0, end_status, last, "", phase, closes=True, row=False))
                break
            if final_phase and fail:
                last = plan[-1].progress if plan else 0
                plan.append(Step(0.0, "FAILED", last, f"{phase} failed: checksum mismatch", phase))
            else:
                plan.append(Step(0.0, "COMPLETED", 100, f"{phase} completed", phase))
            plan[-1].closes = final_phase
        at = base
        for step in plan:  # strictly increasing NOTIFY times
            at = max(at + step_interval_s + random.uniform(0, jitter_s), at + 0.001)
            step.at = at
        op = SimOperation(doc=doc, steps=plan)
        self.operations[op_id] = op
        self._push(plan[0].at, op_id)
        self.count("operations_started")
        return op

    def set_status(self, op_id: str, status: str) -> bool:
        """Set the operation record's status now (STALE, CANCELLED, ...; rows are kept)."""
        op = self.operations.get(op_id)
        if op is None:
            return False
        op.doc.update(status=status, modifiedOn=iso(now_utc()), optlock=int(op.doc["optlock"]) + 1)
        self.count(f"operations_set_{status.lower()}"[:64])
        return True

    def inject_row(self, op_id: str, overrides: dict[str, Any]) -> dict[str, Any] | None:
        """Add a notification row to ``op_id`` whose fields are overridden (e.g. an
        ``operationId`` or ``scopeId`` that is not the operation's: a row that lies about its URL)."""
        op = self.operations.get(op_id)
        if op is None:
            return None
        row = self._notify(op, Step(0.0, "RUNNING", 0, "injected row"))
        row.update(overrides)
        return row

    def close_operation(self, op_id: str, row_id: str) -> bool:
        """Kapua processes the terminal NOTIFY that created row ``row_id`` (e.g. an injected one)
        now: the operation closes in the row's status with ``endedOn`` = its ``sentOn`` and every
        row is deleted. False if the operation or the row is unknown."""
        op = self.operations.get(op_id)
        row = next((r for r in op.rows if r["id"] == row_id), None) if op else None
        if op is None or row is None:
            return False
        self._close(op, row)
        return True

    def delete_operation(self, op_id: str) -> bool:
        op = self.operations.pop(op_id, None)
        if op is None:
            return False
        for row in op.rows:
            self.rows_by_id.pop(str(row["id"]), None)
        op.rows.clear()
        return True

    def delete_once_listed(self, op_id: str, row_id: str) -> None:
        """Delete ``op_id`` at the first read of its record after row ``row_id`` was returned
        to a client: the operation vanishes between a list and the record read that follows."""
        self.doomed[op_id] = row_id

    def take_doomed(self, op_id: str) -> None:
        """Apply :meth:`delete_once_listed` before a read of the record of ``op_id``."""
        row_id = self.doomed.get(op_id)
        if row_id is not None and row_id in self.returned:
            del self.doomed[op_id]
            self.delete_operation(op_id)

    def _push(self, at: float, op_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._schedule, (at, self._seq, op_id))

    # -- time --------------------------------------------------------------------------------

    def advance(self, now: float | None = None) -> int:
        """Apply every NOTIFY that is due; returns how many rows were created or ops closed."""
        now = time.monotonic() if now is None else now
        done = 0
        while self._schedule and self._schedule[0][0] <= now:
            _, _, op_id = heapq.heappop(self._schedule)
            op = self.operations.get(op_id)
            if op is None or op.doc["status"] != "RUNNING":
                continue
            if op.close_at is not None:
                self._close(op)
                done += 1
                continue
            step = op.steps[op.next_step]
            op.next_step += 1
            if not step.row:
                self.set_status(op_id, step.status)
                done += 1
                continue
            row = self._notify(op, step)
            done += 1
            if step.closes:
                if self.config.terminal_row_linger_s > 0:
                    op.close_at = now + self.config.terminal_row_linger_s
                    self._push(op.close_at, op_id)
                else:
                    self._close(op, row)
            else:
                self._push(op.steps[op.next_step].at, op_id)
        return done

    def next_due(self) -> float | None:
        return self._schedule[0][0] if self._schedule else None

    def _notify(self, op: SimOperation, step: Step) -> dict[str, Any]:
        received = now_utc()
        skew = self.config.sent_on_skew_s
        if skew:
            sent = received + timedelta(seconds=random.uniform(-skew, 0))
        else:  # a device's clock moves forward: distinct, rising sentOn (millisecond precision)
            last = op.last_sent
            sent = received if last is None else max(received, last + timedelta(milliseconds=1))
            op.last_sent = sent
        row = {
            "type": "managementOperationNotification",
            "id": kapua_id(),
            "scopeId": op.doc["scopeId"],
            "createdOn": iso(received),
            "createdBy": self.user_id,
            "operationId": op.id,
            "progress": step.progress,
            "resource": step.resource.lower(),
            "sentOn": iso(sent),
            "status": step.status,
            "message": step.message,
        }
        op.rows.append(row)
        self.rows_by_id[str(row["id"])] = row
        self.emitted[str(row["id"])] = row
        self.count("notifications_created")
        return row

    def _close(self, op: SimOperation, terminal: dict[str, Any] | None = None) -> None:
        if terminal is None:  # the closing row is the newest terminal-status row
            terminal = next(r for r in reversed(op.rows) if r["status"] in TERMINAL)
        rows = sorted(op.rows, key=lambda r: (r["sentOn"], r["createdOn"], r["id"]))
        log = "".join(f"{r['sentOn']} - {r['message']}\n" for r in rows if r.get("message"))
        op.doc.update(
            endedOn=terminal["sentOn"],
            status=terminal["status"],
            log=log,
            modifiedOn=iso(now_utc()),
            optlock=int(op.doc["optlock"]) + 1,
        )
        for row in op.rows:
            self.rows_by_id.pop(str(row["id"]), None)
        op.rows.clear()
        self.count(f"operations_{str(terminal['status']).lower()}")

    # -- reading -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for op in self.operations.values():
            status = str(op.doc["status"])
            by_status[status] = by_status.get(status, 0) + 1
        return {
            "operations": by_status,
            "devices": {scope: len(d) for scope, d in self.devices.items()},
            "liveNotifications": len(self.rows_by_id),
            "counters": dict(self.counters),
            "faults": {
                "fail500Next": self.faults.fail_500_next,
                "fail500Rate": self.faults.fail_500_rate,
                "kinds": sorted(self.faults.kinds),
                "badBody": self.faults.bad_body,
                "badBodyKinds": sorted(self.faults.bad_body_kinds),
            },
        }


def _fake_jwt(subject: str) -> str:
    """An opaque JWT-shaped token (header.payload.signature); clients must not parse it."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(b'{"alg":"RS256","typ":"JWT"}')
    payload = b64(f'{{"sub":"{subject}","jti":"{uuid.uuid4()}"}}'.encode())
    return f"{header}.{payload}.{b64(secrets.token_bytes(32))}"
