"""Metrics of Apple gap detection and sync (prefix ``mdm_broker_apple_sync_``).

Label values come from fixed sets: ``reason`` and ``dataset`` from the enums of
:mod:`adapters.apple.syncevents` / :class:`broker.events.SyncInfo`, ``code`` from
:func:`adapters.apple.client.error_code` (Apple errorNumber or HTTP status), ``tenant`` from the
configured tenant names (never uIds or tokens).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from broker.metrics import BrokerMetrics


class AppleSyncMetrics:
    def __init__(self, broker: BrokerMetrics) -> None:
        r = broker.registry
        self.gaps_opened = Counter(
            "mdm_broker_apple_sync_gaps_opened_total",
            "Gap windows opened (gap: non-2xx answers to Apple; restart: no broker running).",
            ["reason"],
            registry=r,
        )
        self.gap_open_since = Gauge(
            "mdm_broker_apple_sync_gap_open_since_timestamp_seconds",
            "Start of the location's open gap (unix time); 0 when none. Owner instance only.",
            ["tenant"],
            registry=r,
        )
        self.syncs = Counter(
            "mdm_broker_apple_sync_syncs_total",
            "Location syncs run, by reason and outcome (ok, error).",
            ["reason", "outcome"],
            registry=r,
        )
        self.records = Counter(
            "mdm_broker_apple_sync_records_total",
            "Records read from Apple by syncs.",
            ["dataset"],
            registry=r,
        )
        self.events = Counter(
            "mdm_broker_apple_sync_events_total",
            "Synced events published (a repeated sync repeats ids; the consumer dedupes).",
            ["dataset"],
            registry=r,
        )
        self.full_reads = Counter(
            "mdm_broker_apple_sync_full_reads_total",
            "Data sets read whole because Apple refused the stored sinceVersionId (9721).",
            ["dataset"],
            registry=r,
        )
        self.errors = Counter(
            "mdm_broker_apple_sync_errors_total",
            "Failed syncs by Apple errorNumber or HTTP status (retried after apple.sync.retry_s).",
            ["code"],
            registry=r,
        )
        self.duration = Histogram(
            "mdm_broker_apple_sync_duration_seconds",
            "Duration of completed location syncs.",
            ["reason"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=r,
        )
        self.requests = Histogram(
            "mdm_broker_apple_sync_requests_per_sync",
            "HTTP requests to Apple per completed location sync (the sync's cost).",
            buckets=(1, 2, 3, 4, 6, 10, 20, 50, 100, 500, 1000),
            registry=r,
        )
        self.owned = Gauge(
            "mdm_broker_apple_sync_owned_locations",
            "Locations whose sync this instance owns (state-topic partitions assigned to it).",
            registry=r,
        )
