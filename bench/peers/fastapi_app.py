"""What a Python team would hand-write: FastAPI + aiokafka, under uvicorn with uvloop + httptools.

It does the same job as the broker's Apple webhook, minus the broker's extras: checks the bearer
token, validates the notification with pydantic, builds a CloudEvents 1.0 JSON event and answers
200 only after Kafka acked it (``acks=all``, idempotent producer, the same 6-partition topic
layout, keyed by ``uId``). Runs in its own virtualenv (bench/peers/requirements.txt, pinned):

    BENCH_BOOTSTRAP=127.0.0.1:9092 BENCH_TOPIC=t BENCH_TOKEN=x \\
      bench/peers/.venv/bin/uvicorn bench.peers.fastapi_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel

BOOTSTRAP = os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("BENCH_TOPIC", "bench.events")
TOKEN = os.environ.get("BENCH_TOKEN", "bench-token")


class Notification(BaseModel):
    notificationId: str
    notificationType: str
    uId: str
    notification: dict[str, Any]


producer: AIOKafkaProducer | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global producer
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        yield
    finally:
        await producer.stop()


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/apple/{tenant}/notifications")
async def notify(tenant: str, request: Request, authorization: str = Header("")) -> Response:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401)
    body = await request.body()
    note = Notification.model_validate_json(body)
    event = {
        "specversion": "1.0",
        "id": note.notificationId,
        "source": f"/apple/locations/{note.uId}",
        "type": "com.example.mdm." + note.notificationType.lower(),
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"raw": orjson.loads(body)},
    }
    assert producer is not None
    await producer.send_and_wait(TOPIC, orjson.dumps(event), key=f"apple:{note.uId}".encode())
    return Response(status_code=200)
