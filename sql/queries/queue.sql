-- pgmq, through its own functions. $1 is always the queue name.

-- name: read_messages
-- Claims up to $3 visible messages for $2 seconds (pgmq counts the read in
-- read_ct), oldest first, passing over those whose body field $4 names a group
-- in $5 (one this worker already holds a full recompute of; see 0016), with the
-- failures recorded for each so far. The body comes as text: it is decoded per
-- message by the worker, within limits, so one body nobody can decode never
-- fails the read of the others.
SELECT m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message::text AS body,
       coalesce(r.failures, 0) AS failures
FROM stats_worker.read_passing_over($1, $2::integer, $3::integer, $4::text, $5::text[]) AS m
LEFT JOIN stats_worker.job_runs AS r ON r.queue_name = $1 AND r.msg_id = m.msg_id
ORDER BY m.msg_id

-- name: extend_visibility
-- Keeps messages still owned (same read_ct, $3) invisible for another $4
-- seconds; returns those, so the worker forgets the ones it lost.
SELECT stats_worker.extend_owned($1, $2::bigint[], $3::integer[], $4::integer)

-- name: send_message
SELECT stats_worker.send($1, $2::jsonb, $3::timestamptz)

-- name: queue_metrics
SELECT length, visible, oldest_age_seconds, total_sent FROM stats_worker.queue_depth($1)

-- name: settle_messages
-- Everything the worker learnt about a batch of messages, in one statement and
-- one transaction: acks, retries, dead letters, their job-run records and the
-- cache invalidation they owe. Only messages the worker still owns ($18: the
-- read_ct of its read) are settled and recorded; the invalidation is owed
-- whatever happened, since the statistics committed. Volatile CTEs run only
-- when referenced, hence the final SELECT that counts them all.
WITH owned AS MATERIALIZED (
    SELECT unnest(stats_worker.lock_owned($1, $2::bigint[], $18::integer[])) AS msg_id
),
runs AS (
    INSERT INTO stats_worker.job_runs AS r (
        queue_name, msg_id, status, attempts, failures, tenant_id, match_id, enqueued_at,
        started_at, finished_at, duration_ms, last_error, updated_at)
    SELECT $1, u.msg_id, u.status, u.attempts, u.failures, u.tenant_id, u.match_id,
           u.enqueued_at, u.started_at, u.finished_at, u.duration_ms, u.last_error, now()
    FROM unnest($2::bigint[], $3::text[], $4::integer[], $19::integer[], $5::uuid[],
                $6::bigint[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                $10::double precision[], $11::text[])
        AS u(msg_id, status, attempts, failures, tenant_id, match_id, enqueued_at,
             started_at, finished_at, duration_ms, last_error)
    WHERE u.msg_id IN (SELECT msg_id FROM owned)
    ON CONFLICT (queue_name, msg_id) DO UPDATE SET
        status = excluded.status,
        attempts = excluded.attempts,
        failures = excluded.failures,
        tenant_id = coalesce(excluded.tenant_id, r.tenant_id),
        match_id = coalesce(excluded.match_id, r.match_id),
        started_at = excluded.started_at,
        finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms,
        last_error = coalesce(excluded.last_error, r.last_error),
        updated_at = now()
    RETURNING 1
),
-- pgmq's functions build their statements at run time, so each call costs a
-- parse and a plan: one with nothing to do is not made (a function in the
-- select list of no row is never called).
acked AS (
    SELECT pgmq.delete($1, x.ids)
    FROM (SELECT ARRAY(SELECT a FROM unnest($12::bigint[]) AS a
                       WHERE a IN (SELECT msg_id FROM owned)) AS ids) AS x
    WHERE cardinality(x.ids) > 0
),
retried AS (
    SELECT stats_worker.retry_after($1, x.ids, x.delays) AS n
    FROM (SELECT array_agg(d.msg_id) AS ids, array_agg(d.delay_s) AS delays
          FROM unnest($13::bigint[], $14::double precision[]) AS d(msg_id, delay_s)
          WHERE d.msg_id IN (SELECT msg_id FROM owned)) AS x
    WHERE x.ids IS NOT NULL
),
dead AS (
    SELECT pgmq.archive($1, x.ids)
    FROM (SELECT ARRAY(SELECT a FROM unnest($15::bigint[]) AS a
                       WHERE a IN (SELECT msg_id FROM owned)) AS ids) AS x
    WHERE cardinality(x.ids) > 0
),
released AS (
    -- Write-ahead invalidations of these runs ($20, see reserve_invalidation):
    -- the row above or below now carries their tags.
    DELETE FROM stats_worker.callbacks WHERE id = ANY($20::bigint[]) RETURNING 1
),
invalidation AS (
    INSERT INTO stats_worker.callbacks (msg_ids, tags, next_attempt_at)
    SELECT $12::bigint[], $16::text[], now() + make_interval(secs => $17::double precision)
    WHERE cardinality($16::text[]) > 0
    RETURNING id
)
SELECT (SELECT count(*) FROM runs) AS runs,
       (SELECT count(*) FROM acked) AS acked,
       coalesce((SELECT n FROM retried), 0) AS retried,
       (SELECT count(*) FROM dead) AS dead,
       (SELECT id FROM invalidation) AS callback_id,
       (SELECT count(*) FROM released) AS released,
       ARRAY(SELECT msg_id FROM owned) AS owned

-- name: reserve_invalidation
-- Written (and committed) before a recompute touches a statistic: the tags it
-- may owe, due only after $2 seconds. The settle that follows deletes it in the
-- transaction that writes the real invalidation; a worker that dies in between
-- leaves it, and it is sent once due: a committed change is never left
-- uninvalidated.
INSERT INTO stats_worker.callbacks (msg_ids, tags, next_attempt_at)
VALUES ($1::bigint[], $3::text[], now() + make_interval(secs => $2::double precision))
RETURNING id

-- name: notify_probe
-- The listener's proof that it hears its channel: a NOTIFY it must receive back.
SELECT pg_notify($1, $2)
