-- Recurring jobs and their leader (worker/upkeep/scheduler.py, worker/upkeep/leader.py).

-- name: try_lead
-- The leader's session advisory lock ($1 names it): held while its connection
-- lives, released by the server when the connection ends.
SELECT pg_try_advisory_lock(hashtextextended($1, 0))

-- name: leader_heartbeat
SELECT 1

-- name: register_recurring_job
-- A job seen for the first time starts from its latest slot ($3): a fresh
-- install does not run it at once. An existing one keeps its last slot.
INSERT INTO stats_worker.recurring_jobs (name, schedule, last_slot)
VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET schedule = excluded.schedule

-- name: claim_recurring_slot
-- Moves the job to slot $2 if it has not run for it yet; one row back means
-- this caller runs it. Missed slots in between are skipped: one catch-up.
UPDATE stats_worker.recurring_jobs
SET last_slot = $2, last_started_at = now(), runs = runs + 1
WHERE name = $1 AND last_slot < $2
RETURNING runs

-- name: record_recurring_result
UPDATE stats_worker.recurring_jobs
SET last_finished_at = now(), last_result = $2, last_error = $3
WHERE name = $1

