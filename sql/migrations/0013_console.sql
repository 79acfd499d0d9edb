-- The operator's console: pausing a queue's consumers, and the replicas seen reading it.

-- A row per paused queue: every consumer of it checks before each read, so all
-- replicas stop reading within one poll (in-flight work still finishes).
CREATE TABLE IF NOT EXISTS stats_worker.paused_queues (
    queue_name text        PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now()
);

-- Each consumer says it is alive every few seconds; the console lists recent ones.
CREATE TABLE IF NOT EXISTS stats_worker.replicas (
    queue_name text        NOT NULL,
    replica    text        NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    paused     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (queue_name, replica)
);
