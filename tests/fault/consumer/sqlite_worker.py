"""A consumer process for the SQLite SIGKILL test: SQLiteStore, the handler appends each event's
id to a file (one line per effect; written to the OS before the handler returns).

``python -m tests.fault.consumer.sqlite_worker BOOTSTRAP TOPIC GROUP DB EFFECTS`` runs until
SIGTERM (then stops gracefully and exits 0). With ``MDM_TEST_KILL_AFTER_EFFECTS=N`` in the
environment it SIGKILLs itself inside the N-th handler, right after writing its effect: the
handler's side effect is done, the store's record of it (and the offset) are not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TextIO

from broker.consumer import SQLiteStore
from broker.events import CanonicalEvent
from tests.fault.consumer.worker_run import run_until_sigterm

#: Small batches, so that the test can bound the re-runs a kill may cause (see test_sigkill.py).
MAX_BATCH_RECORDS = 50


async def main(args: list[str], db: str, effects: TextIO) -> None:
    kill_after = int(os.environ.get("MDM_TEST_KILL_AFTER_EFFECTS", "0"))
    handled = 0

    async def handler(event: CanonicalEvent, tx: None) -> None:
        nonlocal handled
        effects.write(f"{event.id}\n")  # line-buffered: in the OS once written
        handled += 1
        if handled == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    await run_until_sigterm(args, SQLiteStore(db), handler, max_batch_records=MAX_BATCH_RECORDS)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with open(sys.argv[5], "a", buffering=1) as effects_file:
        asyncio.run(main(sys.argv[1:4], sys.argv[4], effects_file))
