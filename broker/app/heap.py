"""Garbage-collector settings of the broker process, applied once it has started.

The objects that exist after start-up (modules, pydantic schemas, settings, the app) live as
long as the process; per request the broker allocates many short-lived containers (request,
event, futures). With CPython's defaults the cyclic collector keeps re-scanning the first and
runs full collections often under load; measured under ``wrk -c32`` (docs/performance.md), a
full collection stalls every request in flight (p99 ~100 ms instead of ~45 ms) and collections
took tens of microseconds per request.

:func:`settle_after_startup` collects once, then moves everything alive into the permanent
generation (``gc.freeze()``: never scanned again, never freed: only start-up objects are
there) and raises the young-generation threshold so that short-lived objects are mostly gone
before a collection looks at them. Cycles are still collected, only less often.

Process-wide: call it from the process's entry point (``mdm-broker run``), never from a
library or a test.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 5_000
"""Allocations (minus deallocations) of containers between two young collections (CPython: 700)."""


def settle_after_startup() -> None:
    """Collect, freeze the start-up heap and raise the young-generation threshold."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
