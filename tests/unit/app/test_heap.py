"""The broker process's garbage-collector settings (broker/app/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from broker.app.heap import YOUNG_GENERATION_THRESHOLD, settle_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settling_freezes_the_startup_heap_and_keeps_collecting_cycles() -> None:
    older = gc.get_threshold()[1:]
    settle_after_startup()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *older)
    assert gc.isenabled()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # cycles made after start-up are still found
