-- What operators see and do. {queue_table} and {archive_table} are pgmq's tables
-- of the queue, filled in from a validated queue name. $1 is the queue name.

-- name: list_jobs
-- Job runs plus messages never read yet ('queued'), newest first. A dead letter
-- put back on the queue lists as 'retried'. $4 tenant, $5 updated since, $6 older
-- than this msg_id (the next page): each NULL for any.
SELECT * FROM (
    SELECT msg_id,
           CASE WHEN status = 'dead' AND retried_as IS NOT NULL THEN 'retried'
                ELSE status END AS status,
           attempts, tenant_id, match_id, enqueued_at, started_at,
           finished_at, duration_ms, last_error, retried_as, updated_at
    FROM stats_worker.job_runs
    WHERE queue_name = $1
    UNION ALL
    SELECT q.msg_id, 'queued', q.read_ct,
           CASE WHEN jsonb_typeof(q.message) = 'object'
                 AND q.message->>'tenant_id' ~* '^[0-9a-f]{{8}}-([0-9a-f]{{4}}-){{3}}[0-9a-f]{{12}}$'
                THEN (q.message->>'tenant_id')::uuid END,
           CASE WHEN jsonb_typeof(q.message) = 'object'
                 AND q.message->>'match_id' ~ '^[0-9]{{1,18}}$'
                THEN (q.message->>'match_id')::bigint END,
           q.enqueued_at, NULL, NULL, NULL, NULL, NULL, q.enqueued_at
    FROM pgmq.{queue_table} q
    WHERE NOT EXISTS (SELECT 1 FROM stats_worker.job_runs r
                      WHERE r.queue_name = $1 AND r.msg_id = q.msg_id)
) jobs
WHERE ($2::text IS NULL OR status = $2)
  AND ($4::uuid IS NULL OR tenant_id = $4)
  AND ($5::timestamptz IS NULL OR updated_at >= $5)
  AND ($6::bigint IS NULL OR msg_id < $6)
ORDER BY msg_id DESC
LIMIT $3

-- name: get_job
SELECT r.msg_id,
       CASE WHEN r.status = 'dead' AND r.retried_as IS NOT NULL THEN 'retried'
            ELSE r.status END AS status,
       r.attempts, r.tenant_id, r.match_id, r.enqueued_at, r.started_at,
       r.finished_at, r.duration_ms, r.last_error, r.retried_as, r.updated_at,
       coalesce(q.message, a.message)::text AS message
FROM stats_worker.job_runs r
LEFT JOIN pgmq.{queue_table} q ON q.msg_id = r.msg_id
LEFT JOIN pgmq.{archive_table} a ON a.msg_id = r.msg_id
WHERE r.queue_name = $1 AND r.msg_id = $2
UNION ALL
SELECT q.msg_id, 'queued', q.read_ct, NULL, NULL, q.enqueued_at, NULL, NULL, NULL, NULL, NULL,
       q.enqueued_at, q.message::text
FROM pgmq.{queue_table} q
WHERE q.msg_id = $2
  AND NOT EXISTS (SELECT 1 FROM stats_worker.job_runs r WHERE r.queue_name = $1 AND r.msg_id = $2)

-- name: retry_dead
-- A dead letter back on the queue as a new message; its old record says where it went.
WITH dead AS (
    DELETE FROM pgmq.{archive_table} WHERE msg_id = $2 RETURNING message
),
resent AS (
    SELECT pgmq.send($1, dead.message) AS new_id FROM dead
),
marked AS (
    UPDATE stats_worker.job_runs r
    SET retried_as = resent.new_id, updated_at = now()
    FROM resent
    WHERE r.queue_name = $1 AND r.msg_id = $2
    RETURNING 1
)
SELECT new_id, (SELECT count(*) FROM marked) AS marked FROM resent

-- name: dead_letters
-- Dead letters not retried yet, oldest first; $2 only those that died since then.
SELECT msg_id FROM stats_worker.job_runs
WHERE queue_name = $1 AND status = 'dead' AND retried_as IS NULL
  AND ($2::timestamptz IS NULL OR updated_at >= $2)
ORDER BY msg_id
LIMIT $3

-- name: queue_summary
-- The queue's health at a glance: now, and over the last 24 hours.
SELECT
    (SELECT count(*) FROM pgmq.{queue_table} q WHERE q.vt <= clock_timestamp()) AS waiting,
    (SELECT count(*) FROM pgmq.{queue_table}) AS in_queue,
    (SELECT extract(epoch FROM clock_timestamp() - min(q.enqueued_at))::float8
       FROM pgmq.{queue_table} q WHERE q.vt <= clock_timestamp()) AS oldest_waiting_seconds,
    count(*) FILTER (WHERE r.status = 'running') AS running,
    count(*) FILTER (WHERE r.status = 'retrying') AS retrying,
    count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded_last_24h,
    count(*) FILTER (WHERE r.status = 'dead' AND r.retried_as IS NOT NULL) AS retried_last_24h,
    count(*) FILTER (WHERE r.status = 'dead' AND r.retried_as IS NULL) AS dead_last_24h,
    (count(*) FILTER (WHERE r.status = 'succeeded'
                        AND r.finished_at > now() - interval '5 minutes') / 5.0)::float8
        AS succeeded_per_minute,
    (count(*) FILTER (WHERE r.status = 'dead'
                        AND r.updated_at > now() - interval '5 minutes') / 5.0)::float8
        AS dead_per_minute,
    avg(r.duration_ms) FILTER (WHERE r.status = 'succeeded') AS mean_duration_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ms)
        FILTER (WHERE r.status = 'succeeded') AS p95_duration_ms,
    (SELECT count(*) FROM stats_worker.callbacks c WHERE c.status = 'failed') AS failed_callbacks
FROM stats_worker.job_runs r
WHERE r.queue_name = $1 AND r.updated_at > now() - interval '24 hours'
