"""One supervisor for every long-lived background task of the broker (pollers, pullers, probes).

Guarantees:

* A supervised task that raises (anything but cancellation by the supervisor itself) is logged
  with its traceback, counted in ``mdm_broker_task_failures_total{task}`` and started again after
  a jittered exponential backoff (:class:`broker.retry.Backoff`;
  ``mdm_broker_task_restarts_total{task}``). A bug in one loop can
  no longer end it for good without anybody noticing.
* A task counts as **down** from its first failure until a restarted run has lasted
  ``stable_after_s`` (a crash loop stays down, however often it restarts). :meth:`Supervisor.problems`
  names every task down longer than ``grace_s``; ``/readyz`` reports them (not ready).
* A task whose coroutine returns normally is finished (its own stop condition): it is not
  restarted and is not a problem.
* A **one-shot** task (a producer being retired, one Kapua poll, one Apple sync) is started with
  :meth:`Supervisor.run_once`: it is not restarted (its owner schedules the next one), but an
  unexpected exception is logged with its traceback and counted in
  ``mdm_broker_task_failures_total{task}`` like a supervised task's, and
  :meth:`Supervisor.recent_failures` names it for ``failure_visible_s`` (``/readyz`` shows it
  without turning not ready: nothing is left down). Code that catches an unexpected exception
  itself, to keep its own loop going, reports it with :meth:`Supervisor.report_failure`.
* :meth:`SupervisedTask.stop` and :meth:`Supervisor.stop` are bounded: no restart after the call,
  the current run gets the budget to finish by itself (callers first set their own stop events),
  then it is cancelled and awaited for at most ``cancel_wait_s``. They return whether every task
  ended within the budget without being cancelled.

Time is read through an injectable ``clock`` (``time.monotonic`` by default) so tests can age a
failure without sleeping. Task names are metric label values: use fixed names
(``kapua-discovery``, ``android-puller-0``), never ids taken from input.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.errors import KafkaAccessError
from broker.retry import Backoff

log = logging.getLogger(__name__)

Clock = Callable[[], float]
TaskFactory = Callable[[], Awaitable[None]]
T = TypeVar("T")


class SupervisorSettings(BaseModel):
    """How background tasks are restarted and when a dead one makes the broker not ready."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_s: float = Field(
        default=30.0,
        gt=0,
        description="A background task down (crashed, not yet running stably) this long makes "
        "/readyz answer 503 naming it",
    )
    stable_after_s: float = Field(
        default=5.0,
        ge=0,
        description="A restarted task counts as up again once it has run this long without failing",
    )
    restart_initial_s: float = Field(
        default=0.5, ge=0, description="First restart delay after a crash"
    )
    restart_max_s: float = Field(default=30.0, ge=0, description="Ceiling of the restart delay")
    cancel_wait_s: float = Field(
        default=1.0,
        gt=0,
        description="After the stop budget, how long a cancelled task may take to unwind",
    )
    failure_visible_s: float = Field(
        default=600.0,
        gt=0,
        description="How long /readyz lists a failed one-shot task (informational: not a 503)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SupervisorSettings:
        if self.stable_after_s >= self.grace_s:
            raise ValueError("supervisor.stable_after_s must be smaller than supervisor.grace_s")
        if self.restart_max_s < self.restart_initial_s:
            raise ValueError("supervisor.restart_max_s must be >= supervisor.restart_initial_s")
        return self


class TaskPhase(enum.StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed, waiting for its restart delay
    FINISHED = "finished"  # returned normally
    STOPPED = "stopped"  # stopped by the supervisor


@dataclass(frozen=True)
class TaskStatus:
    """A snapshot of one supervised task (the JSON of ``/readyz`` is built from it)."""

    name: str
    phase: TaskPhase
    failures: int
    restarts: int
    down_for_s: float | None  # None while up
    last_error: str | None


@dataclass
class _OneShotFailures:
    count: int
    last_error: str
    at: float


class SupervisorMetrics:
    """``mdm_broker_task_failures_total``, ``..._restarts_total`` and ``mdm_broker_task_up``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "mdm_broker_task_failures_total",
            "Background tasks that ended with an unexpected exception, by task.",
            ["task"],
            registry=registry,
        )
        self.restarts = Counter(
            "mdm_broker_task_restarts_total",
            "Background tasks restarted by the supervisor after a failure, by task.",
            ["task"],
            registry=registry,
        )
        self.up = Gauge(
            "mdm_broker_task_up",
            "1 while a supervised background task runs (or finished normally), 0 while it is down.",
            ["task"],
            registry=registry,
        )


class SupervisedTask:
    """One named long-lived task; created by :meth:`Supervisor.spawn`."""

    def __init__(self, supervisor: Supervisor, name: str, factory: TaskFactory) -> None:
        self.name = name
        self._sup = supervisor
        self._factory = factory
        s = supervisor.settings
        self._backoff = Backoff(s.restart_initial_s, s.restart_max_s, rng=supervisor.rng)
        self._stopping = asyncio.Event()
        self._run: asyncio.Task[None] | None = None
        self.phase = TaskPhase.RUNNING
        self.failures = 0
        self.restarts = 0
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._started_at = supervisor.clock()
        self._loop = asyncio.create_task(self._supervise(), name=f"supervise-{name}")

    # -- state -------------------------------------------------------------------------------

    def down_for(self) -> float | None:
        """Seconds this task has been down, or None while it is up (see module docstring)."""
        if self._failing_since is None:
            return None
        now = self._sup.clock()
        stable = self._sup.settings.stable_after_s
        if self.phase is TaskPhase.RUNNING and now - self._started_at >= stable:
            self._failing_since = None  # the restarted run proved itself
            self._backoff.reset()
            return None
        return now - self._failing_since

    def status(self) -> TaskStatus:
        return TaskStatus(
            self.name, self.phase, self.failures, self.restarts, self.down_for(), self.last_error
        )

    @property
    def done(self) -> bool:
        return self._loop.done()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        metrics = self._sup.metrics
        # read at scrape time, so it turns 1 again once a restarted run proved stable
        metrics.up.labels(self.name).set_function(
            lambda: 0.0 if self.down_for() is not None else 1.0
        )
        me = asyncio.current_task()
        while True:
            self.phase = TaskPhase.RUNNING
            self._started_at = self._sup.clock()
            self._run = asyncio.create_task(self._call(), name=self.name)
            try:
                await asyncio.shield(self._run)
            except asyncio.CancelledError as exc:
                if me is not None and me.cancelling():  # stop() (or loop shutdown) cancelled us
                    await self._cancel_run()
                    self.phase = TaskPhase.STOPPED
                    raise
                failure: BaseException = exc  # the run was cancelled by somebody else: a bug
            except Exception as exc:
                failure = exc
            else:
                self.phase = TaskPhase.STOPPED if self._stopping.is_set() else TaskPhase.FINISHED
                if self.phase is TaskPhase.FINISHED:
                    log.info("task %s finished", self.name)
                return
            if self._stopping.is_set():
                log.warning("task %s failed while stopping: %r", self.name, failure)
                self.phase = TaskPhase.STOPPED
                return
            await self._on_failure(failure)
            if self._stopping.is_set():
                self.phase = TaskPhase.STOPPED
                return

    async def _call(self) -> None:
        await self._factory()

    async def _on_failure(self, exc: BaseException) -> None:
        now = self._sup.clock()
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        metrics = self._sup.metrics
        metrics.failures.labels(self.name).inc()
        stable = self._sup.settings.stable_after_s
        if self._failing_since is None or now - self._started_at >= stable:
            self._backoff.reset()  # a new episode (first failure, or after a stable run)
            self._failing_since = now
        delay = self._backoff.next_delay()
        diagnosed = isinstance(exc, KafkaAccessError)  # its message is the whole story
        log.error(
            "task %s failed (failure %d); restarting in %.2fs%s",
            self.name,
            self.failures,
            delay,
            f": {exc}" if diagnosed else "",
            exc_info=None if diagnosed else exc,
        )
        self.phase = TaskPhase.RESTARTING
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if not self._stopping.is_set():
            self.restarts += 1
            metrics.restarts.labels(self.name).inc()

    async def _cancel_run(self) -> None:
        run = self._run
        if run is None or run.done():
            return
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(run), self._sup.settings.cancel_wait_s)

    async def stop(self, timeout_s: float) -> bool:
        """No restart from now on; wait ``timeout_s`` for the current run, then cancel it.

        Returns True when the task ended within the budget by itself. Idempotent.
        """
        self._stopping.set()
        if self._loop.done():
            return True
        done, _ = await asyncio.wait({self._loop}, timeout=max(0.0, timeout_s))
        if done:
            return True
        if timeout_s > 0:  # stop(0) asks for a cancel at once: nothing to warn about
            log.warning("task %s did not stop within %.1fs; cancelling it", self.name, timeout_s)
        self._loop.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._loop), self._sup.settings.cancel_wait_s * 2)
        if not self._loop.done():
            log.error("task %s ignored cancellation; abandoned", self.name)
        self.phase = TaskPhase.STOPPED
        return False


class Supervisor:
    """Owns every supervised task of one broker process (see the module docstring)."""

    def __init__(
        self,
        settings: SupervisorSettings | None = None,
        registry: CollectorRegistry | None = None,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or SupervisorSettings()
        self.metrics = SupervisorMetrics(registry if registry is not None else CollectorRegistry())
        self.clock = clock
        self.rng = rng or random.Random()
        self._tasks: dict[str, SupervisedTask] = {}
        self._oneshot: dict[str, _OneShotFailures] = {}
        self._oneshot_running: set[asyncio.Task[Any]] = set()

    def spawn(self, name: str, factory: TaskFactory) -> SupervisedTask:
        """Start ``factory()`` under supervision; a new run is ``factory()`` called again.

        Must be called from a running event loop. A name in use by a task still alive is refused
        (ValueError): names are the key of /readyz and of the metrics.
        """
        current = self._tasks.get(name)
        if current is not None and not current.done:
            raise ValueError(f"a supervised task named {name!r} is already running")
        task = SupervisedTask(self, name, factory)
        self._tasks[name] = task
        return task

    def run_once(
        self, name: str, coro: Coroutine[Any, Any, T], *, task_name: str | None = None
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a one-shot task: never restarted, but a failure is reported.

        ``name`` is the metric label and the /readyz key (a fixed name such as ``kapua-poll``);
        ``task_name`` may carry an id for debugging (asyncio's task name only). Cancellation is
        not a failure. The task is referenced until it ends, so it cannot be garbage-collected
        while running; the caller may still await it (its exception is then raised there too).
        """
        task = asyncio.create_task(coro, name=task_name or name)
        self._oneshot_running.add(task)

        def ended(done: asyncio.Task[T]) -> None:
            self._oneshot_running.discard(done)
            if not done.cancelled() and (exc := done.exception()) is not None:
                self.report_failure(name, exc)

        task.add_done_callback(ended)
        return task

    def report_failure(self, name: str, exc: BaseException) -> None:
        """Log ``exc`` with its traceback and count it under ``name`` (see the module docstring)."""
        error = f"{type(exc).__name__}: {exc}"[:300]
        entry = self._oneshot.get(name)
        if entry is None:
            self._oneshot[name] = _OneShotFailures(1, error, self.clock())
        else:
            entry.count, entry.last_error, entry.at = entry.count + 1, error, self.clock()
        self.metrics.failures.labels(name).inc()
        log.error("task %s failed: %s", name, error, exc_info=exc)

    def recent_failures(self) -> dict[str, str]:
        """One-shot tasks that failed within ``failure_visible_s``: name -> what happened."""
        now = self.clock()
        horizon = self.settings.failure_visible_s
        return {
            name: f"{f.count} failure(s), last {now - f.at:.0f}s ago: {f.last_error}"
            for name, f in self._oneshot.items()
            if now - f.at <= horizon
        }

    @property
    def tasks(self) -> list[SupervisedTask]:
        return list(self._tasks.values())

    def statuses(self) -> list[TaskStatus]:
        return [t.status() for t in self._tasks.values()]

    def problems(self) -> dict[str, str]:
        """Tasks down longer than ``grace_s``: name -> why (for ``/readyz``)."""
        grace = self.settings.grace_s
        found: dict[str, str] = {}
        for task in self._tasks.values():
            down = task.down_for()
            if down is not None and down > grace:
                found[task.name] = (
                    f"down for {down:.0f}s after {task.failures} failure(s): {task.last_error}"
                )
        return found

    async def stop(self, timeout_s: float) -> bool:
        """Stop every task (see :meth:`SupervisedTask.stop`) within one budget."""
        tasks = [t for t in self._tasks.values() if not t.done]
        if not tasks:
            return True
        results = await asyncio.gather(*(t.stop(timeout_s) for t in tasks))
        return all(results)
