"""In-memory dedupe store: for tests and throw-away consumers.

Guarantees: within one process, an id recorded is skipped until it is older than ``retention_s``
or pushed out by ``max_entries`` newer ids (oldest first). Nothing survives a restart, and the
record of "done" is written after the handler returned, so a crash between the two runs the
handler again on redelivery: use :class:`~broker.consumer.PostgresStore` for exactly-once effect.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from broker.consumer.store import DEFAULT_RETENTION_S, BatchResult, EventKey, StopBatch


class InMemoryStore:
    """Bounded dict of processed ids; the handler's transaction argument is ``None``."""

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        self._retention_s = retention_s
        self._clock = clock
        self._done: OrderedDict[EventKey, float] = OrderedDict()
        self._failures: dict[EventKey, tuple[int, float]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run_once(self, key: EventKey, work: Callable[[None], Awaitable[None]]) -> bool:
        if self._is_live(key):
            return False
        await work(None)
        self._remember(key, self._clock())
        return True

    async def run_batch(
        self, keys: Sequence[EventKey], work: Callable[[int, None], Awaitable[None]]
    ) -> BatchResult:
        """Like :meth:`run_once` per key, in order; each key is recorded as soon as its work
        returned, so on a failure every earlier key is final. The clock is read once: the
        batch's keys are recorded with the time the batch started."""
        ran: list[bool] = []
        now = self._clock()
        cutoff = now - self._retention_s
        done = self._done
        try:
            for i, key in enumerate(keys):
                at = done.get(key)
                if at is not None:
                    if at >= cutoff:
                        ran.append(False)
                        continue
                    del done[key]  # expired: recorded again below, at the newest end
                try:
                    await work(i, None)
                except StopBatch:
                    return BatchResult(ran)
                except Exception as exc:
                    return BatchResult(ran, exc, i)
                done[key] = now
                ran.append(True)
            return BatchResult(ran)
        finally:  # the bound, once per batch (a batch's own keys stay until it ends)
            while len(done) > self._max_entries:
                done.popitem(last=False)

    async def is_processed(self, key: EventKey) -> bool:
        return self._is_live(key)

    async def record_failure(self, key: EventKey) -> int:
        count = self._failures.get(key, (0, 0.0))[0] + 1
        self._failures[key] = (count, self._clock())
        return count

    async def clear_failures(self, key: EventKey) -> None:
        self._failures.pop(key, None)

    async def purge_expired(self) -> int:
        cutoff = self._clock() - self._retention_s
        purged = 0
        while self._done:
            key, at = next(iter(self._done.items()))
            if at >= cutoff:
                break
            del self._done[key]
            purged += 1
        for key in [k for k, (_, at) in self._failures.items() if at < cutoff]:
            del self._failures[key]
            purged += 1
        return purged

    def __len__(self) -> int:
        return len(self._done)

    def _remember(self, key: EventKey, now: float) -> None:
        done = self._done
        if key in done:  # recorded before and expired: it moves to the newest end
            done.move_to_end(key)
        done[key] = now
        if len(done) > self._max_entries:
            done.popitem(last=False)

    def _is_live(self, key: EventKey) -> bool:
        at = self._done.get(key)
        return at is not None and at >= self._clock() - self._retention_s
