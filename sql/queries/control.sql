-- Pause and resume, and the replicas seen: stats_worker.paused_queues and .replicas.

-- name: is_paused
SELECT EXISTS (SELECT 1 FROM stats_worker.paused_queues WHERE queue_name = $1)

-- name: pause_queue
-- True when this paused it, false when it already was.
WITH paused AS (
    INSERT INTO stats_worker.paused_queues (queue_name) VALUES ($1)
    ON CONFLICT (queue_name) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM paused)

-- name: resume_queue
WITH resumed AS (
    DELETE FROM stats_worker.paused_queues WHERE queue_name = $1 RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM resumed)

-- name: replica_seen
INSERT INTO stats_worker.replicas (queue_name, replica, paused) VALUES ($1, $2, $3)
ON CONFLICT (queue_name, replica) DO UPDATE SET seen_at = now(), paused = EXCLUDED.paused

-- name: recent_replicas
-- Replicas seen within $2 seconds, most recent first; older rows are dropped.
WITH forgotten AS (
    DELETE FROM stats_worker.replicas
    WHERE queue_name = $1 AND seen_at < now() - interval '1 day'
)
SELECT replica, seen_at, paused,
       round(extract(epoch FROM now() - seen_at)::numeric, 1)::float8 AS seen_seconds_ago
FROM stats_worker.replicas
WHERE queue_name = $1 AND seen_at >= now() - make_interval(secs => $2::double precision)
ORDER BY seen_at DESC
LIMIT 100
