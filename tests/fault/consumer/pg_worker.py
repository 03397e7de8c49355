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

from broker.consumer import ConsumedRecord, IdempotentConsumer, PostgresStore, ProcessingOutcome
from broker.events import CanonicalEvent
from tests.integration.consumer.helpers import consumer_settings


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

    settings = consumer_settings(
        bootstrap,
        topic,
        group,
        commit_interval_s=0.5,
        session_timeout_s=6.0,
        heartbeat_interval_s=1.0,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = IdempotentConsumer(settings, PostgresStore(dsn), handler, observer=observe)
    await consumer.run_until(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(*sys.argv[1:5]))
