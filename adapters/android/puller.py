"""Concurrent long-poll pullers: pull a batch, normalize, publish, then acknowledge.

Guarantees (per batch, per puller):

* The batch is acknowledged only after :meth:`KafkaPublisher.publish` (and the dead-lettering of
  any unparseable notification) returned, i.e. after Kafka acked every record of the batch.
  A notification whose event Kafka can never take (:class:`RecordRejectedError`, e.g. too large)
  is dead-lettered raw like an unparseable one, so the set is stored and acked, not redelivered
  forever.
* The acknowledgement is sent only while less than ``ack_budget_s`` has passed since the batch
  arrived (Google's deadline is 20 s). When the budget is exceeded, or publishing failed, the batch
  is NOT acknowledged: it is counted and the vendor redelivers it later, possibly to another
  puller, under a new set id; the deterministic event ids make the redelivery a duplicate that the
  idempotent consumer skips.
* An empty batch is never acknowledged.
* Failed pulls (429, 5xx, network errors, rejected credentials) are logged, counted and retried
  after an exponential backoff with jitter (at least the server's ``Retry-After``).
* While Kafka is unhealthy no puller pulls (work it could not hand on would only expire).
* :meth:`LongPollPuller.stop` cancels pulls in flight (their sets, if any, are never acked and
  come back) and lets batches being published finish within the timeout, then cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from adapters.android.metrics import AndroidMetrics, NotAckedReason, RetryReason
from adapters.android.source import NotificationSource, PulledBatch
from broker.errors import (
    AdapterError,
    NormalizationError,
    PublishError,
    RecordRejectedError,
    VendorAuthError,
    VendorUnavailableError,
)
from broker.events import CanonicalEvent, Vendor
from broker.health import KafkaHealth
from broker.lifecycle import Lifecycle
from broker.metrics import BrokerMetrics
from broker.retry import Backoff
from broker.sink import EventSink
from broker.supervisor import SupervisedTask, Supervisor

log = logging.getLogger(__name__)


Normalizer = Callable[[Any], CanonicalEvent]
BackoffFactory = Callable[[], Backoff]


class LongPollPuller:
    """``pullers`` concurrent loops over one :class:`NotificationSource`."""

    def __init__(
        self,
        *,
        source: NotificationSource,
        normalize: Normalizer,
        publisher: EventSink,
        health: KafkaHealth,
        metrics: BrokerMetrics,
        android_metrics: AndroidMetrics,
        pullers: int,
        ack_budget_s: float,
        backoff: BackoffFactory,
        idle_pause_s: float = 0.0,
        vendor: Vendor = Vendor.ANDROID,
        supervisor: Supervisor | None = None,
        task_name: str | None = None,
    ) -> None:
        self._source = source
        self._normalize = normalize
        self._publisher = publisher
        self._health = health
        self._metrics = metrics
        self._am = android_metrics
        self._pullers = pullers
        self._budget = ack_budget_s
        self._backoff_factory = backoff
        self._idle_pause_s = idle_pause_s
        self._vendor = vendor
        self._stop = asyncio.Event()
        self._supervisor = supervisor or Supervisor()
        self._task_name = task_name or f"{vendor.value}-puller"
        self._tasks: list[SupervisedTask] = []
        self.lifecycle = Lifecycle(type(self).__name__)
        self._pull_tasks: set[asyncio.Task[PulledBatch]] = set()
        self._auth_failed = False

    @property
    def auth_ok(self) -> bool:
        """False after the vendor rejected our credentials, until a later call succeeds."""
        return not self._auth_failed

    @property
    def running(self) -> bool:
        return any(not t.done for t in self._tasks)

    async def start(self) -> None:
        """Start the pull loops. Idempotent; a stopped puller cannot be started again."""
        await self.lifecycle.start(self._start)

    async def _start(self) -> None:
        self._tasks = [
            self._supervisor.spawn(f"{self._task_name}-{i}", self._loop_factory(i))
            for i in range(self._pullers)
        ]

    def _loop_factory(self, index: int) -> Callable[[], Awaitable[None]]:
        return lambda: self._run(index)

    def __del__(self) -> None:
        if any(not t.done for t in getattr(self, "_tasks", [])):
            warnings.warn(f"Unclosed LongPollPuller {self!r}", ResourceWarning, stacklevel=1)

    async def stop(self, timeout_s: float) -> None:
        """Stop pulling; wait up to ``timeout_s`` for batches being handled. Idempotent."""
        await self.lifecycle.stop(lambda: self._halt(timeout_s))

    async def _halt(self, timeout_s: float) -> None:
        self._stop.set()
        for pull in list(self._pull_tasks):
            pull.cancel()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        # bounded: each loop gets the budget, then is cancelled (its set, if any, is never acked)
        await asyncio.gather(*(task.stop(timeout_s) for task in tasks))

    # -- one loop ----------------------------------------------------------------------------

    async def _run(self, index: int) -> None:
        backoff = self._backoff_factory()
        while not self._stop.is_set():
            if not await self._wait_kafka_healthy(index):
                return
            try:
                batch = await self._pull()
            except asyncio.CancelledError:
                if self._stop.is_set():
                    return
                raise
            except AdapterError as exc:
                await self._on_pull_error(index, exc, backoff)
                continue
            except Exception as exc:  # a bug must not silently end the loop: log, back off, go on
                log.exception("%s puller %d: unexpected pull failure", self._vendor.value, index)
                await self._on_pull_error(index, AdapterError(repr(exc)), backoff)
                continue
            if self._auth_failed:
                log.info("%s: credentials accepted again", self._vendor.value)
            self._auth_failed = False
            self._am.auth_ok.set(1)
            backoff.reset()
            if batch.empty:
                self._am.sets.labels("empty").inc()
                if self._idle_pause_s > 0:
                    await self._sleep(self._idle_pause_s)
                continue
            try:
                await self._handle(batch)
            except Exception:  # never acked; Google redelivers. Keep pulling.
                log.exception(
                    "%s puller %d: set not acked after an unexpected error",
                    self._vendor.value,
                    index,
                )
                self._not_acked(NotAckedReason.PUBLISH_FAILED)

    async def _pull(self) -> PulledBatch:
        """One pull that :meth:`stop` can cancel without touching batches being handled."""
        task = asyncio.create_task(self._source.pull())
        self._pull_tasks.add(task)
        try:
            return await task
        finally:
            self._pull_tasks.discard(task)

    async def _handle(self, batch: PulledBatch) -> None:
        handle = batch.handle
        mapped: list[tuple[Any, CanonicalEvent]] = []
        poison: list[tuple[Any, NormalizationError]] = []
        received: dict[str, int] = {}  # per canonical type: one metric update per type and set
        for raw in batch.notifications:
            try:
                event = self._normalize(raw)
            except NormalizationError as exc:
                poison.append((raw, exc))
                continue
            except Exception as exc:  # input that trips a mapping bug is still kept, in the DLQ
                log.exception("%s: unexpected error normalizing a notification", self._vendor.value)
                poison.append((raw, NormalizationError("schema", f"{type(exc).__name__}: {exc}")))
                continue
            mapped.append((raw, event))
            received[event.type] = received.get(event.type, 0) + 1
        for event_type, count in received.items():
            self._metrics.notifications_received.labels(self._vendor.value, event_type).inc(count)
        try:
            poison += await self._publish_set(mapped)
            for raw, problem in poison:
                log.warning("%s: notification dead-lettered (%s)", self._vendor.value, problem)
                await self._publisher.dead_letter(
                    orjson.dumps(raw),
                    vendor=self._vendor.value,
                    reason=problem.reason,
                    detail=problem.detail,
                    tenant=_tenant_of(raw),
                    content_type="application/json",
                )
        except PublishError as exc:
            log.warning(
                "%s: set of %d not acked, publish failed (%s); it will be redelivered",
                self._vendor.value,
                len(batch.notifications),
                exc,
            )
            self._not_acked(NotAckedReason.PUBLISH_FAILED)
            return
        elapsed = time.monotonic() - batch.arrived_at
        remaining = self._budget - elapsed
        if handle is None:  # a source that has nothing to ack (defensive; EMM always has an id)
            return
        if remaining <= 0:
            log.warning(
                "%s: set of %d published but not acked: %.2fs since arrival exceeds the %.1fs "
                "budget; it will be redelivered (same event ids)",
                self._vendor.value,
                len(batch.notifications),
                elapsed,
                self._budget,
            )
            self._am.deadline_missed.inc()
            self._not_acked(NotAckedReason.BUDGET_EXCEEDED)
            return
        if not await self._ack_within_budget(handle, batch.arrived_at):
            self._not_acked(NotAckedReason.ACK_FAILED)
            return
        self._am.ack_latency.observe(time.monotonic() - batch.arrived_at)
        self._am.sets.labels("acked").inc()

    async def _publish_set(
        self, mapped: list[tuple[Any, CanonicalEvent]]
    ) -> list[tuple[Any, NormalizationError]]:
        """Publish every event; return the raw notifications Kafka can never take, with why.

        A :class:`RecordRejectedError` names the rejected records when it can (``indices``):
        those go to the DLQ and the rest is published again (duplicates of records already
        written are harmless: same ids). When it cannot, each event is published on its own.
        Either way the set ends stored (events or DLQ) and can be acked, instead of coming back
        forever. Raises :class:`PublishError` (retriable) like publish.
        """
        rejected: list[tuple[Any, NormalizationError]] = []
        remaining = list(mapped)
        while True:  # each round removes at least one rejected record, or ends
            try:
                await self._publisher.publish([event for _, event in remaining])
                return rejected
            except RecordRejectedError as exc:
                named = {i for i in exc.indices if 0 <= i < len(remaining)}
                if not named:
                    return rejected + await self._publish_one_by_one(remaining)
                rejected += [
                    (remaining[i][0], NormalizationError(exc.reason, exc.detail)) for i in named
                ]
                remaining = [pair for i, pair in enumerate(remaining) if i not in named]

    async def _publish_one_by_one(
        self, mapped: list[tuple[Any, CanonicalEvent]]
    ) -> list[tuple[Any, NormalizationError]]:
        rejected: list[tuple[Any, NormalizationError]] = []
        for raw, event in mapped:
            try:
                await self._publisher.publish([event])
            except RecordRejectedError as exc:
                rejected.append((raw, NormalizationError(exc.reason, exc.detail)))
        return rejected

    async def _ack_within_budget(self, handle: str, arrived_at: float) -> bool:
        """Acknowledge; retry 429/5xx/network failures with backoff while the budget lasts."""
        backoff = self._backoff_factory()
        while True:
            remaining = self._budget - (time.monotonic() - arrived_at)
            if remaining <= 0:
                log.warning(
                    "%s: acknowledge not confirmed within the %.1fs budget; set will be redelivered",
                    self._vendor.value,
                    self._budget,
                )
                return False
            try:
                await self._source.ack(handle, remaining)
            except VendorUnavailableError as exc:
                delay = backoff.next_delay(exc.retry_after_s)
                left = self._budget - (time.monotonic() - arrived_at)
                if delay >= left:
                    log.warning(
                        "%s: acknowledge failed (%s), no budget left to retry; set will be "
                        "redelivered",
                        self._vendor.value,
                        exc,
                    )
                    return False
                log.info(
                    "%s: acknowledge failed (%s); retrying in %.2fs", self._vendor.value, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            except AdapterError as exc:
                log.warning(
                    "%s: acknowledge failed (%s); set will be redelivered", self._vendor.value, exc
                )
                return False
            return True

    def _not_acked(self, reason: NotAckedReason) -> None:
        self._am.not_acked.labels(reason.value).inc()
        self._am.sets.labels("not_acked").inc()

    async def _on_pull_error(self, index: int, exc: AdapterError, backoff: Backoff) -> None:
        retry_after: float | None = None
        if isinstance(exc, VendorAuthError):
            reason = RetryReason.AUTH
            self._auth_failed = True
            self._am.auth_ok.set(0)
        elif isinstance(exc, VendorUnavailableError):
            retry_after = exc.retry_after_s
            if exc.status == 429:
                reason = RetryReason.RATE_LIMITED
            elif exc.status is not None:
                reason = RetryReason.SERVER_ERROR
            else:
                reason = RetryReason.NETWORK
        else:
            reason = RetryReason.CLIENT_ERROR
        delay = backoff.next_delay(retry_after)
        self._am.retries.labels(reason.value).inc()
        level = logging.ERROR if reason is RetryReason.AUTH else logging.WARNING
        log.log(
            level,
            "%s puller %d: %s (%s); retry %d in %.1fs",
            self._vendor.value,
            index,
            exc,
            reason.value,
            backoff.attempts,
            delay,
        )
        await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` or until stop, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def _wait_kafka_healthy(self, index: int) -> bool:
        """Park while Kafka is unhealthy; False when stopping."""
        if self._health.healthy:
            return not self._stop.is_set()
        log.info(
            "%s puller %d parked: kafka unhealthy (%s)",
            self._vendor.value,
            index,
            self._health.reason,
        )
        self._am.parked_pullers.inc()
        try:
            stop = asyncio.create_task(self._stop.wait())
            healthy = asyncio.create_task(self._health.wait_healthy())
            try:
                await asyncio.wait({stop, healthy}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (stop, healthy):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            self._am.parked_pullers.dec()
        if not self._stop.is_set():
            log.info("%s puller %d resumed: kafka healthy", self._vendor.value, index)
        return not self._stop.is_set()


def _tenant_of(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("enterpriseId"), str):
        return str(raw["enterpriseId"])
    return ""
