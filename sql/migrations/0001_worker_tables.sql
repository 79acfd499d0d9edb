-- The worker's own bookkeeping, apart from the app's tables and the stats.
CREATE SCHEMA IF NOT EXISTS stats_worker;

-- Settings that SQL running without the worker (triggers) must know, such as
-- the queue name; migrate writes them.
CREATE TABLE IF NOT EXISTS stats_worker.config (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- One row per queue message the worker has seen: what operators look at.
-- A message not read yet has no row and shows as 'queued' (it is in pgmq).
CREATE TABLE IF NOT EXISTS stats_worker.job_runs (
    queue_name  text        NOT NULL,
    msg_id      bigint      NOT NULL,
    status      text        NOT NULL
        CHECK (status IN ('running', 'succeeded', 'retrying', 'dead')),
    attempts    integer     NOT NULL,
    tenant_id   uuid,
    match_id    bigint,
    enqueued_at timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    duration_ms double precision,
    last_error  text,
    retried_as  bigint,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, msg_id)
);
CREATE INDEX IF NOT EXISTS job_runs_status_updated
    ON stats_worker.job_runs (queue_name, status, updated_at DESC);
CREATE INDEX IF NOT EXISTS job_runs_updated
    ON stats_worker.job_runs (queue_name, updated_at DESC);

-- Cache invalidations owed to the app. Written in the transaction that acks
-- the message, so an invalidation is never lost and never needs a recompute.
CREATE TABLE IF NOT EXISTS stats_worker.callbacks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_ids         bigint[]    NOT NULL,
    tags            text[]      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'failed')),
    last_error      text
);
CREATE INDEX IF NOT EXISTS callbacks_due
    ON stats_worker.callbacks (next_attempt_at) WHERE status = 'pending';
