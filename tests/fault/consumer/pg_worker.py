"""A consumer process for the SIGKILL test: PostgresStore, handler inserts one row per event.

``python -m tests.fault.consumer.pg_worker BOOTSTRAP TOPIC GROUP DSN`` runs until SIGTERM (then
stops gracefully and exits 0). With ``MDM_TEST_KILL_AFTER_EFFECTS=N`` in the environment it
SIGKILLs itself right after the N-th handler transaction committed, i.e. between the effect (and
id) commit in PostgreSQL and the Kafka offset commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import asyncpg

from broker.consumer import ConsumedRecord, PostgresStore, ProcessingOutcome
from broker.events import CanonicalEvent
from tests.fault.consumer.worker_run import run_until_sigterm


async def main(bootstrap: str, topic: str, group: str, dsn: str) -> None:
    kill_after = int(os.environ.get("MDM_TEST_KILL_AFTER_EFFECTS", "0"))
    processed = 0

    async def handler(event: CanonicalEvent, tx: asyncpg.Connection) -> None:
        await tx.execute("INSERT INTO effects (id) VALUES ($1)", event.id)

    def observe(outcome: ProcessingOutcome, record: ConsumedRecord) -> None:
        nonlocal processed
        if outcome is ProcessingOutcome.PROCESSED:
            processed += 1
            if processed == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    await run_until_sigterm([bootstrap, topic, group], PostgresStore(dsn), handler, observe)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(*sys.argv[1:5]))
