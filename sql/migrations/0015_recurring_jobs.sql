-- Recurring jobs (worker/scheduler.py): the last slot each one ran for. The
-- leader claims a slot by moving last_slot forward in one UPDATE, so a slot
-- runs once even if two replicas briefly both believe they lead.
CREATE TABLE IF NOT EXISTS stats_worker.recurring_jobs (
    name             text PRIMARY KEY,
    schedule         text NOT NULL,
    last_slot        timestamptz NOT NULL,
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_result      text,
    last_error       text,
    runs             bigint NOT NULL DEFAULT 0
);
