"""The one lifecycle (broker/lifecycle.py): idempotent start/stop, undo on a failed start, a
retry after it where allowed, restart after stop refused, start and stop never interleave,
ResourceWarning for a leaked component."""

from __future__ import annotations

import asyncio

import pytest

from broker.errors import NotStartedError
from broker.lifecycle import AsyncService, Lifecycle, LifecycleState


class Component(AsyncService):
    def __init__(self, fail_start: bool = False, retry_failed_start: bool = False) -> None:
        self.lifecycle = Lifecycle("Component", retry_failed_start=retry_failed_start)
        self.calls: list[str] = []
        self.fail_start = fail_start
        self.release_start = asyncio.Event()
        self.release_start.set()

    async def start(self) -> None:
        await self.lifecycle.start(self._start, undo=self._undo)

    async def stop(self) -> None:
        await self.lifecycle.stop(self._stop)

    async def _start(self) -> None:
        self.calls.append("start")
        await self.release_start.wait()
        if self.fail_start:
            raise OSError("port taken")

    async def _undo(self) -> None:
        self.calls.append("undo")

    async def _stop(self) -> None:
        self.calls.append("stop")


async def test_start_and_stop_are_idempotent_and_async_with_runs_both() -> None:
    async with Component() as component:
        assert component.lifecycle.state is LifecycleState.RUNNING
        await component.start()
    await component.stop()
    assert component.calls == ["start", "stop"]
    assert component.lifecycle.state.value == "stopped"


async def test_a_stopped_component_refuses_to_start_again() -> None:
    component = Component()
    await component.start()
    await component.stop()
    with pytest.raises(NotStartedError, match="Component was stopped and cannot be started again"):
        await component.start()


async def test_stop_before_start_needs_no_hook_and_forbids_a_later_start() -> None:
    component = Component()
    await component.stop()
    assert component.calls == []
    with pytest.raises(NotStartedError):
        await component.start()


async def test_a_failed_start_is_undone_and_leaves_the_component_stopped() -> None:
    component = Component(fail_start=True)
    with pytest.raises(OSError, match="port taken"):
        await component.start()
    assert component.calls == ["start", "undo"]
    assert component.lifecycle.state.value == "stopped"
    await component.stop()  # nothing left to stop
    assert component.calls == ["start", "undo"]
    with pytest.raises(NotStartedError, match="Component start failed and cannot be started"):
        await component.start()


async def test_a_failed_start_can_be_retried_when_the_component_allows_it() -> None:
    component = Component(fail_start=True, retry_failed_start=True)
    with pytest.raises(OSError, match="port taken"):
        await component.start()
    assert component.lifecycle.state is LifecycleState.NEW
    component.fail_start = False  # the cause is fixed
    await component.start()
    assert component.lifecycle.running
    await component.stop()
    assert component.calls == ["start", "undo", "start", "stop"]
    with pytest.raises(NotStartedError, match="was stopped and cannot be started again"):
        await component.start()


async def test_stop_after_a_failed_start_needs_no_hook_and_is_idempotent() -> None:
    component = Component(fail_start=True, retry_failed_start=True)
    with pytest.raises(OSError, match="port taken"):
        await component.start()
    await component.stop()
    await component.stop()
    assert component.calls == ["start", "undo"]
    assert component.lifecycle.state is LifecycleState.STOPPED


async def test_stop_waits_for_a_start_in_progress() -> None:
    component = Component()
    component.release_start.clear()
    starting = asyncio.create_task(component.start())
    await asyncio.sleep(0)  # let start() take the lock and block in the hook
    assert component.lifecycle.state is LifecycleState.STARTING
    stopping = asyncio.create_task(component.stop())
    await asyncio.sleep(0)
    assert not stopping.done()
    component.release_start.set()
    await asyncio.gather(starting, stopping)
    assert component.calls == ["start", "stop"]


async def test_require_running() -> None:
    component = Component()
    with pytest.raises(NotStartedError, match="Component is new, not running"):
        component.lifecycle.require_running()
    async with component:
        component.lifecycle.require_running()


async def test_a_component_dropped_while_running_warns() -> None:
    component = Component()
    await component.start()
    with pytest.warns(ResourceWarning, match="Component was not stopped"):
        component.__del__()  # what the garbage collector calls
    await component.stop()
    component.__del__()  # stopped: silent (warnings are errors in this suite)
