"""The benchmark harness works (not its numbers): wrk drives the three HTTP servers, each in its
own process, every 2xx is found in Kafka, the consumer variants all finish, the table renders."""

from __future__ import annotations

import asyncio

import pytest

from bench import android
from bench.consumer import bench_consumer
from bench.http import bench_http
from bench.run import apple_notification, build_event, table

pytestmark = [pytest.mark.kafka]


def test_http_harness_drives_every_server_and_finds_every_2xx_in_kafka(
    kafka_bootstrap: str,
) -> None:
    result = bench_http(kafka_bootstrap, rounds=1, duration_s=1, concurrencies=(4,))
    medians = result["c4"]["medians"]
    assert set(medians) == {"bare", "fastapi", "broker"}
    for name, m in medians.items():
        assert m["errors"] == 0, name
        assert m["req_per_s"] > 0, name
        assert m["cpu_us_per_req"] > 0, name
    for name in ("fastapi", "broker"):
        check = result["every_2xx_in_kafka"][name]
        assert check["records_added"] >= check["answered_2xx"] > 0
    assert "webhook c4: broker" in table({"http": result})


def test_consumer_harness_runs_every_variant_to_the_end(kafka_bootstrap: str) -> None:
    result = asyncio.run(
        bench_consumer(
            kafka_bootstrap,
            300,
            1,
            lambda n: [build_event(apple_notification(i)) for i in range(n)],
            make_random_id_events=lambda n: [
                build_event(apple_notification(i, random_id=True)) for i in range(n)
            ],
        )
    )
    assert set(result["medians"]) == {
        "bare",
        "bare+validate",
        "memory",
        "sqlite",
        "sqlite, write awaited",
        "sqlite, random ids",
        "sqlite, random ids, write awaited",
    }
    assert all(v > 0 for v in result["medians"].values())
    assert result["ratios"]["bare"] == 1.0


def test_android_harness_offers_and_measures_every_notification(kafka_bootstrap: str) -> None:
    result = asyncio.run(android.run(kafka_bootstrap, rate=300, seconds=1, set_size=100))
    assert result["offered"] == result["acked"] > 0
    assert result["missed_ack_deadlines"] == 0
    assert result["arrival_to_ack_ms"]["p99"] >= result["arrival_to_ack_ms"]["p50"] > 0
