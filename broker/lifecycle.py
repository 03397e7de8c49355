"""One lifecycle for every long-lived component (app, adapters, pullers, clients, simulators).

A component owns a :class:`Lifecycle` and routes its ``start()`` / ``stop()`` through it::

    NEW --start()--> STARTING --ok--> RUNNING --stop()--> STOPPING --> STOPPED
                        |
                        +--fails--> what started is undone (``undo``), STOPPED, error raised

Guarantees, the same for every component:

* ``start()`` on a RUNNING component and ``stop()`` on a STOPPED one return at once (idempotent);
  ``stop()`` of a never-started component just marks it STOPPED;
* a failed ``start()`` leaves nothing running (the component's ``undo`` ran) and the component
  STOPPED: components are single-use, a retry makes a new one;
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

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.state = LifecycleState.NEW
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self.state is LifecycleState.RUNNING

    async def start(self, hook: Hook, undo: Hook | None = None) -> None:
        """Run ``hook`` once to start; on failure run ``undo`` (errors logged) and re-raise."""
        async with self._lock:
            if self.state is LifecycleState.RUNNING:
                return
            if self.state is LifecycleState.STOPPED:
                raise NotStartedError(
                    f"{self.owner} was stopped and cannot be started again; create a new one"
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
                self.state = LifecycleState.STOPPED
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
