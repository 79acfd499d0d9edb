"""Prometheus metrics: declarations only. Labels never carry tenant or match ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double every counter's output and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

_JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

messages_total = Counter(
    "stats_worker_messages",
    "Messages finished, by outcome (succeeded, retried, dead).",
    ["queue", "outcome"],
    registry=REGISTRY,
)
dead_letters_total = Counter(
    "stats_worker_dead_letters",
    "Messages moved to the pgmq archive, by reason (malformed, attempts_exhausted, gave_up).",
    ["queue", "reason"],
    registry=REGISTRY,
)
messages_handed_back_total = Counter(
    "stats_worker_messages_handed_back",
    "Messages read while another replica's recompute held their tenant, given back for it.",
    ["queue"],
    registry=REGISTRY,
)
messages_lost_total = Counter(
    "stats_worker_messages_lost",
    "Messages another worker read after this one's visibility timeout lapsed (not settled here).",
    ["queue"],
    registry=REGISTRY,
)
job_duration_seconds = Histogram(
    "stats_worker_job_duration_seconds",
    "Time from taking a message (or coalesced group) to its outcome.",
    ["queue"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
aggregation_duration_seconds = Histogram(
    "stats_worker_aggregation_duration_seconds",
    "Time of one statistics aggregation (one table) for one recompute.",
    ["table"],
    buckets=_QUERY_BUCKETS,
    registry=REGISTRY,
)
jobs_in_flight = Gauge(
    "stats_worker_jobs_in_flight",
    "Messages being worked on by this process.",
    ["queue"],
    registry=REGISTRY,
)
queue_messages = Gauge(
    "stats_worker_queue_messages",
    "Messages in the queue (pgmq.metrics), by state (total, visible).",
    ["queue", "state"],
    registry=REGISTRY,
)
queue_oldest_message_age_seconds = Gauge(
    "stats_worker_queue_oldest_message_age_seconds",
    "Age of the oldest message in the queue (0 when empty).",
    ["queue"],
    registry=REGISTRY,
)
last_poll_timestamp_seconds = Gauge(
    "stats_worker_last_poll_timestamp_seconds",
    "Unix time of the consumer's last successful read.",
    ["queue"],
    registry=REGISTRY,
)
listener_up = Gauge(
    "stats_worker_listener_up",
    "1 while the LISTEN connection for insert notifications is open.",
    ["queue"],
    registry=REGISTRY,
)
callback_attempts_total = Counter(
    "stats_worker_callback_attempts",
    "Cache invalidation POSTs, by status class (2xx, 3xx, 4xx, 5xx, error).",
    ["status_class"],
    registry=REGISTRY,
)
callback_failures_total = Counter(
    "stats_worker_callback_failures",
    "Cache invalidations given up after their attempts ran out or a 4xx.",
    ["reason"],
    registry=REGISTRY,
)
auth_failures_total = Counter(
    "stats_worker_auth_failures",
    "Operator API requests refused for a missing or wrong bearer token.",
    registry=REGISTRY,
)
alerts_total = Counter(
    "stats_worker_alerts",
    "Webhook alerts (dead letters, drift found by verify), by result (sent, suppressed, failed).",
    ["result"],
    registry=REGISTRY,
)
pool_connections = Gauge(
    "stats_worker_pool_connections",
    "Database pool connections, by state (open, idle, max).",
    ["state"],
    registry=REGISTRY,
)
purged_rows_total = Counter(
    "stats_worker_purged_rows",
    "Rows deleted by retention, by table.",
    ["table"],
    registry=REGISTRY,
)
table_bytes = Gauge(
    "stats_worker_table_bytes",
    "Size on disk (with indexes) of the tables retention keeps small.",
    ["table"],
    registry=REGISTRY,
)
table_rows = Gauge(
    "stats_worker_table_rows",
    "Estimated rows (the planner's) of the tables retention keeps small.",
    ["table"],
    registry=REGISTRY,
)
leader = Gauge(
    "stats_worker_leader",
    "1 while this replica leads (runs the recurring jobs), else 0.",
    registry=REGISTRY,
)
recurring_runs_total = Counter(
    "stats_worker_recurring_runs",
    "Recurring job runs, by job and result (succeeded, drift, failed).",
    ["job", "result"],
    registry=REGISTRY,
)
recurring_last_success = Gauge(
    "stats_worker_recurring_last_success_timestamp_seconds",
    "Unix time a recurring job last finished without error (on the replica that ran it).",
    ["job"],
    registry=REGISTRY,
)
drift_rows = Gauge(
    "stats_worker_drift_rows",
    "Statistics rows the last verify found differing from a recompute (0: none).",
    registry=REGISTRY,
)
