"""One lifecycle for every long-lived component (app, adapters, pullers, clients, simulators,
the Kafka publisher, the consumer library's ``IdempotentConsumer``).

A component owns a :class:`Lifecycle` and routes its ``start()`` / ``stop()`` through it::

    NEW --start()--> STARTING --ok--> RUNNING --stop()--> STOPPING --> STOPPED
     ^                  |
     |                  +--fails--> ``undo`` runs, the error is raised, then STOPPED,
     +------------------------------ or NEW again with ``retry_failed_start``

Guarantees, the same for every component:

* ``start()`` on a RUNNING component and ``stop()`` on a STOPPED one return at once (idempotent);
  ``stop()`` of a never-started component (or one whose start failed) just marks it STOPPED;
* a failed ``start()`` leaves nothing running (the component's ``undo`` ran). A component made
  with ``retry_failed_start=True`` (the Kafka clients: publisher, consumer library, whose start
  only opens connections) is NEW again: ``start()`` can be retried on the same object once the
  cause is fixed (Kafka reachable, credentials corrected). Any other is STOPPED: its ``undo``
  may end parts that cannot be started twice (the app stops its publisher and supervisor), and
  ``start()`` says so ("... start failed ...; create a new one");
* a STOPPED component refuses ``start()`` with :class:`~broker.errors.NotStartedError`
  ("... was stopped and cannot be started again; create a new one"): state is never reused;
* start and stop never interleave (a ``stop()`` during ``start()`` waits for it to finish);
* :meth:`Lifecycle.warn_if_running` (from ``__del__``) emits a ``ResourceWarning`` for a component
  dropped while running.

:class:`AsyncService` adds ``async with`` on top for components whose ``stop()`` needs no argument.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import warnings
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from broker.errors import NotStartedError

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class LifecycleState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Lifecycle:
    """The state machine of one component; ``owner`` names it in errors and warnings."""

    def __init__(self, owner: str, *, retry_failed_start: bool = False) -> None:
        self.owner = owner
        self.state = LifecycleState.NEW
        self._retry_failed_start = retry_failed_start
        self._start_failed = False  # STOPPED by a failed start, not by stop()
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self.state is LifecycleState.RUNNING

    async def start(self, hook: Hook, undo: Hook | None = None) -> None:
        """Run ``hook`` once to start; on failure run ``undo`` (errors logged) and re-raise,
        leaving the component NEW (``retry_failed_start``) or STOPPED."""
        async with self._lock:
            if self.state is LifecycleState.RUNNING:
                return
            if self.state is LifecycleState.STOPPED:
                why = "start failed" if self._start_failed else "was stopped"
                raise NotStartedError(
                    f"{self.owner} {why} and cannot be started again; create a new one"
                )
            self.state = LifecycleState.STARTING
            try:
                await hook()
            except BaseException:
                if undo is not None:
                    try:
                        await undo()
                    except Exception:
                        log.exception("%s: undoing a failed start failed too", self.owner)
                if self._retry_failed_start:
                    self.state = LifecycleState.NEW
                else:
                    self.state = LifecycleState.STOPPED
                    self._start_failed = True
                raise
            self.state = LifecycleState.RUNNING

    async def stop(self, hook: Hook) -> None:
        """Run ``hook`` once to stop a started component; STOPPED afterwards, even if it raised."""
        async with self._lock:
            if self.state is LifecycleState.STOPPED:
                return
            if self.state is LifecycleState.NEW:
                self.state = LifecycleState.STOPPED
                return
            self.state = LifecycleState.STOPPING
            try:
                await hook()
            finally:
                self.state = LifecycleState.STOPPED

    def require_running(self) -> None:
        """Raise :class:`NotStartedError` unless RUNNING (for methods that need a started one)."""
        if self.state is not LifecycleState.RUNNING:
            raise NotStartedError(f"{self.owner} is {self.state.value}, not running")

    def warn_if_running(self) -> None:
        """For ``__del__``: a component garbage-collected while running leaked its resources."""
        if self.state is LifecycleState.RUNNING:
            warnings.warn(f"{self.owner} was not stopped", ResourceWarning, stacklevel=2)


class AsyncService:
    """Base for components with ``start()`` / ``stop()``: adds ``async with`` and the
    ResourceWarning. Subclasses set ``self.lifecycle`` and implement ``start``/``stop``."""

    lifecycle: Lifecycle

    async def start(self) -> object:
        raise NotImplementedError

    async def stop(self) -> object:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        lifecycle = getattr(self, "lifecycle", None)
        if lifecycle is not None:
            lifecycle.warn_if_running()
