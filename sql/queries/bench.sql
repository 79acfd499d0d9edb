-- The benchmark (worker/bench): its own database, so it may keep its own tables.
-- Database names are checked by worker.bench.loader before they are quoted in.

-- name: bench_server_version
SELECT current_setting('server_version')

-- name: bench_create_tables
-- The results of the matches the bench will complete, written when the league
-- is loaded (the matches themselves are scheduled): the bench process reads
-- them back a few at a time instead of holding the league in memory.
CREATE SCHEMA bench;
CREATE TABLE bench.pending (
    match_id bigint PRIMARY KEY,
    phase text NOT NULL,
    ordinal integer NOT NULL,
    tenant_id uuid NOT NULL,
    status text NOT NULL,
    team_a_score integer,
    team_b_score integer
);
CREATE INDEX pending_phase_ordinal_idx ON bench.pending (phase, ordinal);
CREATE TABLE bench.pending_lines (
    match_id bigint NOT NULL,
    player_id bigint NOT NULL,
    team text NOT NULL,
    goals integer NOT NULL,
    assists integer NOT NULL,
    own_goals integer NOT NULL,
    is_mvp boolean NOT NULL,
    PRIMARY KEY (match_id, player_id)
);
-- Copies of one tenant's rows in every source and statistics table, as
-- p_copies new tenants: tenant ids new, every other id (bigint `id` or
-- `*_id`, and bigint[] lists of them) moved past all ids in the database, and
-- every date shifted by (k - p_copies / 2) * p_step for copy k, so the copies'
-- matches sort both before and after the original's. Free text and JSON are
-- copied as they are. Run with the enqueue triggers off: the copies' statistics
-- are copied too, so they need no recompute.
CREATE FUNCTION bench.copy_tenant(p_tenant uuid, p_copies integer, p_step interval)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_stride bigint;
    v_table regclass;
    v_columns text;
    v_values text;
    v_filter text;
    v_rows bigint;
    v_total bigint := 0;
BEGIN
    SELECT greatest(
        (SELECT max(id) FROM public.matches),
        (SELECT max(id) FROM public.players),
        (SELECT max(id) FROM public.seasons)
    ) + 1 INTO v_stride;
    CREATE TEMP TABLE copies ON COMMIT DROP AS
    SELECT md5(p_tenant::text || k)::uuid AS tenant_id,
           k * v_stride AS id_offset,
           (k - p_copies / 2) * p_step AS shift
    FROM generate_series(1, p_copies) AS k;
    FOREACH v_table IN ARRAY ARRAY[
        'public.tenants', 'public.seasons', 'public.players', 'public.matches',
        'public.match_players', 'stats.player_totals', 'stats.season_standings',
        'stats.personal_bests', 'stats.hall_of_fame', 'stats.match_reports',
        'stats.player_form', 'stats.player_streaks', 'stats.partnerships',
        'stats.season_leaderboards', 'stats.milestones', 'stats.player_ratings',
        'stats.rating_steps', 'stats.player_marks', 'stats.applied_by_stat'
    ]::regclass[] LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
               string_agg(CASE
                   WHEN a.attname = 'tenant_id'
                       OR (v_table = 'public.tenants'::regclass AND a.attname = 'id')
                       THEN 'c.tenant_id'
                   WHEN a.atttypid = 'bigint'::regtype
                       AND (a.attname = 'id' OR a.attname LIKE '%\_id')
                       THEN format('t.%I + c.id_offset', a.attname)
                   WHEN a.atttypid = 'bigint[]'::regtype AND a.attname LIKE '%\_ids'
                       THEN format('array(SELECT e + c.id_offset FROM unnest(t.%I) AS e)',
                                   a.attname)
                   WHEN a.atttypid = 'timestamptz'::regtype
                       THEN format('t.%I + c.shift', a.attname)
                   WHEN a.atttypid = 'date'::regtype
                       THEN format('(t.%I + c.shift)::date', a.attname)
                   ELSE format('t.%I', a.attname)
               END, ', ' ORDER BY a.attnum)
        INTO v_columns, v_values
        FROM pg_attribute AS a
        WHERE a.attrelid = v_table AND a.attnum > 0 AND NOT a.attisdropped;
        v_filter := CASE v_table
            WHEN 'public.tenants'::regclass THEN 't.id = $1'
            WHEN 'public.match_players'::regclass
                THEN 't.match_id IN (SELECT m.id FROM public.matches AS m WHERE m.tenant_id = $1)'
            ELSE 't.tenant_id = $1'
        END;
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s AS t CROSS JOIN copies AS c WHERE %s',
                       v_table, v_columns, v_values, v_table, v_filter)
        USING p_tenant;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_total := v_total + v_rows;
    END LOOP;
    PERFORM setval(pg_get_serial_sequence(t, 'id'), (v_stride * (p_copies + 1)))
    FROM unnest(ARRAY['public.matches', 'public.players', 'public.seasons']) AS t;
    RETURN v_total;
END
$$

-- name: bench_pending_matches
-- The next $3 matches of phase $1 from ordinal $2, with their lineups as the
-- app will record them: [player_id, team, goals, assists, own_goals, is_mvp].
SELECT p.ordinal, p.match_id, p.tenant_id, m.season_id, m.played_at, p.status,
       p.team_a_score, p.team_b_score,
       jsonb_agg(jsonb_build_array(l.player_id, l.team, l.goals, l.assists, l.own_goals,
                                   l.is_mvp) ORDER BY l.player_id) AS lines
FROM bench.pending p
JOIN public.matches m ON m.id = p.match_id
JOIN bench.pending_lines l ON l.match_id = p.match_id
WHERE p.phase = $1 AND p.ordinal >= $2
GROUP BY p.ordinal, p.match_id, m.season_id, m.played_at
ORDER BY p.ordinal
LIMIT $3

-- name: bench_phase_size
SELECT count(*) FROM bench.pending WHERE phase = $1

-- name: bench_lineup_rows
SELECT count(*) FROM public.match_players

-- name: bench_counted_matches
SELECT count(*) FROM stats.counted_matches

-- name: bench_only_tenant
-- The tenant of the tenant-count database, before it is copied.
SELECT id FROM public.tenants

-- name: bench_copy_tenant
-- $2 copies of tenant $1 (bench.copy_tenant), dates $3 apart; the rows written.
SELECT bench.copy_tenant($1, $2, $3)

-- name: bench_checkpoint
CHECKPOINT

-- name: bench_vacuum_analyze
VACUUM ANALYZE

-- name: bench_analyze
ANALYZE

-- name: bench_uncount_match
-- Raw SQL runs: take a completed match back out of the statistics' source
-- without a message (enqueue triggers off in the same transaction), so that the
-- raw run recomputes exactly what the worker recomputed for it.
UPDATE public.matches SET status = 'scheduled', team_a_score = NULL, team_b_score = NULL
WHERE id = $1

-- name: bench_recount_match
UPDATE public.matches m
SET status = p.status, team_a_score = p.team_a_score, team_b_score = p.team_b_score
FROM bench.pending p
WHERE m.id = $1 AND p.match_id = m.id

-- name: bench_send_noop_messages
-- In a transaction with triggers off: pgmq's insert-notify trigger updates one
-- throttle row per message, which makes a 20,000-row insert take seconds (the
-- worker reads at once on start anyway).
SELECT count(*) FROM pgmq.send_batch(
    $1::text, ARRAY(SELECT jsonb_build_object('noop', g) FROM generate_series(1, $2::integer) AS g))

-- name: bench_vacuum_queue
-- Before each queue measurement, so that neither pays for the other's dead rows
-- ({table} is pgmq's table of a queue whose name passed the settings' check).
VACUUM ANALYZE pgmq.{table}

-- name: bench_delete_messages
SELECT count(*) FROM pgmq.delete($1::text, $2::bigint[])

-- name: bench_scale_out_enqueue
-- The scale-out backlog: $1 corrections, round-robin over the tenants, the same
-- matches in the same order every round, in one transaction (the replicas see
-- it all at once); returns the first message id and how many were sent.
WITH counted AS (
    SELECT m.tenant_id, m.id,
           row_number() OVER (PARTITION BY m.tenant_id ORDER BY hashint8(m.id), m.id) AS turn
    FROM public.matches AS m
    WHERE m.status = 'completed' AND m.team_a_score IS NOT NULL AND m.team_b_score IS NOT NULL
),
picked AS (
    SELECT tenant_id, id FROM counted ORDER BY turn, tenant_id LIMIT $1
)
SELECT min(msg_id), count(*)
FROM (SELECT stats.enqueue_match(tenant_id, id) AS msg_id FROM picked) AS sent

-- name: bench_scale_out_settled
-- How many of the round's messages have their final record.
SELECT count(*)
FROM stats_worker.job_runs
WHERE msg_id >= $1 AND status IN ('succeeded', 'dead')

-- name: bench_scale_out_drain_seconds
-- The round's first message enqueued to its last run finished.
SELECT extract(epoch FROM max(finished_at) - min(enqueued_at))::float8
FROM stats_worker.job_runs
WHERE msg_id >= $1

-- name: bench_latest_matches
-- A tenant's $2 latest counted matches (sent again as live messages).
SELECT m.id
FROM public.matches AS m
WHERE m.tenant_id = $1 AND m.status = 'completed'
  AND m.team_a_score IS NOT NULL AND m.team_b_score IS NOT NULL
ORDER BY m.played_at DESC, m.id DESC
LIMIT $2

-- name: bench_enqueue_tenant_matches
-- A backfill: up to $3 of tenant $2's completed matches, oldest first, on queue $1.
SELECT count(*) FROM pgmq.send_batch($1::text, ARRAY(
    SELECT jsonb_build_object('tenant_id', m.tenant_id, 'match_id', m.id)
    FROM public.matches AS m
    WHERE m.tenant_id = $2 AND m.status = 'completed'
    ORDER BY m.played_at, m.id
    LIMIT $3))

-- name: bench_count_tenant_matches
-- How many messages bench_enqueue_tenant_matches sends for tenant $1 (at most $2).
SELECT count(*) FROM (
    SELECT 1 FROM public.matches AS m
    WHERE m.tenant_id = $1 AND m.status = 'completed'
    LIMIT $2) AS sent

-- name: bench_delete_unread
-- The backlog's messages no worker holds ({queue} is the bench's own queue):
-- those it holds it settles, instead of finding them gone under it.
WITH deleted AS (
    DELETE FROM pgmq.q_{queue} WHERE vt <= clock_timestamp() RETURNING 1
)
SELECT count(*) FROM deleted
