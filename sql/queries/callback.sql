-- Cache invalidations owed to the app (stats_worker.callbacks). settle_messages
-- (queue.sql) inserts a row leased to the process that settled it; these
-- queries deliver, retry or give up on it.

-- name: claim_due_callbacks
-- Up to $1 pending rows whose time has come (a crashed worker's, or a retry),
-- leased to the caller for $2 seconds so no other process sends them meanwhile.
WITH due AS (
    SELECT id
    FROM stats_worker.callbacks
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE stats_worker.callbacks AS c
SET next_attempt_at = now() + make_interval(secs => $2::double precision)
FROM due
WHERE c.id = due.id
RETURNING c.id, c.tags, c.attempts

-- name: next_callback_due
-- Seconds until the earliest pending row is due (negative: overdue; NULL: none).
SELECT extract(epoch FROM min(next_attempt_at) - now())::double precision
FROM stats_worker.callbacks
WHERE status = 'pending'

-- name: delete_callbacks
-- Delivered (or nowhere to deliver): nothing more is owed.
DELETE FROM stats_worker.callbacks WHERE id = ANY($1::bigint[])

-- name: record_callback_failure
-- One failed attempt per row: count it, then either schedule the next attempt
-- in delay_s seconds or give up ('failed', kept for operators).
UPDATE stats_worker.callbacks AS c
SET attempts = f.attempts,
    next_attempt_at = now() + make_interval(secs => f.delay_s),
    status = CASE WHEN f.give_up THEN 'failed' ELSE 'pending' END,
    last_error = $5::text
FROM unnest($1::bigint[], $2::integer[], $3::double precision[], $4::boolean[])
    AS f(id, attempts, delay_s, give_up)
WHERE c.id = f.id

-- name: pending_callbacks
SELECT count(*) FROM stats_worker.callbacks WHERE status = 'pending'

-- name: failed_callbacks
-- Invalidations given up on, newest first, for operators to see and resend.
SELECT id, tags, msg_ids, created_at, attempts, last_error
FROM stats_worker.callbacks
WHERE status = 'failed'
ORDER BY id DESC
LIMIT $1

-- name: resend_callbacks
-- Failed invalidations due again now with a fresh count of attempts; $1 NULL for all.
UPDATE stats_worker.callbacks
SET status = 'pending', attempts = 0, next_attempt_at = now()
WHERE status = 'failed' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
RETURNING id
