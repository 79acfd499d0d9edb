-- Retention: old rows deleted in small batches (worker/upkeep/retention.py).
-- {queue_table} and {archive_table} are pgmq's tables of the queue $1, filled
-- in from a validated queue name. Every batch is one short statement that
-- skips rows another transaction holds, so it never waits on (or blocks) the
-- settle of a running job. The age is in days.

-- name: purge_job_runs
-- Finished records only: a record whose message is still in the queue (running,
-- retrying, or re-read after its timeout) keeps the failures it counts, and a
-- dead letter's record stays while the archive holds its message.
WITH doomed AS (
    SELECT r.msg_id
    FROM stats_worker.job_runs AS r
    WHERE r.queue_name = $1
      AND r.status IN ('succeeded', 'dead')
      AND r.updated_at < now() - make_interval(secs => $2::double precision * 86400)
      AND NOT EXISTS (SELECT 1 FROM pgmq.{queue_table} AS q WHERE q.msg_id = r.msg_id)
      AND NOT EXISTS (SELECT 1 FROM pgmq.{archive_table} AS a WHERE a.msg_id = r.msg_id)
    ORDER BY r.updated_at
    LIMIT $3
    FOR UPDATE OF r SKIP LOCKED
)
DELETE FROM stats_worker.job_runs AS r
USING doomed
WHERE r.queue_name = $1 AND r.msg_id = doomed.msg_id

-- name: count_purgeable_job_runs
SELECT count(*)
FROM stats_worker.job_runs AS r
WHERE r.queue_name = $1
  AND r.status IN ('succeeded', 'dead')
  AND r.updated_at < now() - make_interval(secs => $2::double precision * 86400)
  AND NOT EXISTS (SELECT 1 FROM pgmq.{queue_table} AS q WHERE q.msg_id = r.msg_id)
  AND NOT EXISTS (SELECT 1 FROM pgmq.{archive_table} AS a WHERE a.msg_id = r.msg_id)

-- name: purge_archive
-- Dead letters archived more than $1 days ago.
WITH doomed AS (
    SELECT a.msg_id
    FROM pgmq.{archive_table} AS a
    WHERE a.archived_at < now() - make_interval(secs => $1::double precision * 86400)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM pgmq.{archive_table} AS a
USING doomed
WHERE a.msg_id = doomed.msg_id

-- name: count_purgeable_archive
SELECT count(*)
FROM pgmq.{archive_table} AS a
WHERE a.archived_at < now() - make_interval(secs => $1::double precision * 86400)
 

-- name: purge_callbacks
-- Invalidations given up on ('failed') more than $1 days ago. Pending ones are
-- still owed to the app (a running job's write-ahead row among them): never.
WITH doomed AS (
    SELECT c.id
    FROM stats_worker.callbacks AS c
    WHERE c.status = 'failed'
      AND c.created_at < now() - make_interval(secs => $1::double precision * 86400)
    ORDER BY c.created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM stats_worker.callbacks AS c
USING doomed
WHERE c.id = doomed.id

-- name: count_purgeable_callbacks
SELECT count(*)
FROM stats_worker.callbacks AS c
WHERE c.status = 'failed'
  AND c.created_at < now() - make_interval(secs => $1::double precision * 86400)
 

-- name: table_sizes
-- Size on disk (with indexes and TOAST) and the planner's row estimate of the
-- tables retention keeps small; $1 is the queue names.
SELECT t.name, pg_total_relation_size(t.oid)::bigint AS bytes,
       greatest(c.reltuples, 0)::bigint AS rows
FROM (
    SELECT 'stats_worker.job_runs' AS name, to_regclass('stats_worker.job_runs') AS oid
    UNION ALL
    SELECT 'stats_worker.callbacks', to_regclass('stats_worker.callbacks')
    UNION ALL
    SELECT 'pgmq.a_' || q, to_regclass(format('pgmq.%I', 'a_' || q)) FROM unnest($1::text[]) AS q
) AS t
JOIN pg_class AS c ON c.oid = t.oid
