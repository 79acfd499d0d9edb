-- The statistics recompute, as the handler runs it. The functions live in the
-- migrations (sql/migrations/0004_stats_functions.sql).

-- name: message_scope
-- What messages of tenant $1 touch. Only what can be this tenant's goes in: a
-- match of another tenant, or a player or season id that belongs to another
-- tenant, is dropped here, so a forged message never reaches another tenant's
-- rows or bookkeeping (the matches themselves are safe: every function filters
-- them by tenant). The messages are a no-op (changes_something false) only when
-- they name no match this tenant has or had (in the source, or still in the
-- statistics), none of its players or seasons, and no old position.
WITH known AS (
    SELECT coalesce(array_agg(k.id ORDER BY k.id), '{}') AS ids
    FROM unnest($2::bigint[]) AS k(id)
    WHERE EXISTS (SELECT 1 FROM public.matches m WHERE m.id = k.id AND m.tenant_id = $1)
       OR EXISTS (SELECT 1 FROM stats.applied_by_stat am
                  WHERE am.match_id = k.id AND am.tenant_id = $1)
       OR EXISTS (SELECT 1 FROM stats.match_reports r
                  WHERE r.match_id = k.id AND r.tenant_id = $1)
),
own_players AS (
    SELECT coalesce(array_agg(p.id), '{}') AS ids
    FROM unnest($3::bigint[]) AS p(id)
    WHERE NOT EXISTS (SELECT 1 FROM public.players o WHERE o.id = p.id AND o.tenant_id <> $1)
),
own_seasons AS (
    SELECT coalesce(array_agg(s.id), '{}') AS ids
    FROM unnest($4::bigint[]) AS s(id)
    WHERE NOT EXISTS (SELECT 1 FROM public.seasons o WHERE o.id = s.id AND o.tenant_id <> $1)
)
SELECT cardinality(known.ids) > 0 OR cardinality(own_players.ids) > 0
           OR cardinality(own_seasons.ids) > 0 OR $5::timestamptz IS NOT NULL
           AS changes_something,
       scope.player_ids, scope.season_ids, scope.rating_from_at, scope.rating_from_id
FROM known, own_players, own_seasons,
     LATERAL stats.message_scope($1::uuid, $2::bigint[], own_players.ids, own_seasons.ids,
                                 $5::timestamptz) AS scope

-- name: rebuild_scope
SELECT match_ids, player_ids, season_ids, rating_from_at, rating_from_id
FROM stats.rebuild_scope($1::uuid)

-- name: tenants_with_stats
SELECT id FROM public.tenants
UNION
SELECT DISTINCT tenant_id FROM stats.player_totals
UNION
SELECT DISTINCT tenant_id FROM stats.match_reports
ORDER BY 1

-- name: refresh_player_totals
SELECT stats.refresh_player_totals($1, $2, $3, $4, $5, $6)

-- name: refresh_season_standings
SELECT stats.refresh_season_standings($1, $2, $3, $4, $5, $6)

-- name: refresh_personal_bests
SELECT stats.refresh_personal_bests($1, $2, $3, $4, $5, $6)

-- name: refresh_match_reports
SELECT stats.refresh_match_reports($1, $2, $3, $4, $5, $6)

-- name: refresh_player_form
SELECT stats.refresh_player_form($1, $2, $3, $4, $5, $6)

-- name: refresh_player_streaks
SELECT stats.refresh_player_streaks($1, $2, $3, $4, $5, $6)

-- name: refresh_partnerships
SELECT stats.refresh_partnerships($1, $2, $3, $4, $5, $6)

-- name: refresh_season_leaderboards
SELECT stats.refresh_season_leaderboards($1, $2, $3, $4, $5, $6)

-- name: refresh_milestones
SELECT stats.refresh_milestones($1, $2, $3, $4, $5, $6)

-- name: refresh_player_ratings
SELECT stats.refresh_player_ratings($1, $2, $3, $4, $5, $6)

-- name: refresh_hall_of_fame
-- Second phase: derives from player_totals, player_streaks and personal_bests.
SELECT stats.refresh_hall_of_fame($1, $2, $3, $4, $5, $6)

-- name: table_key_columns
-- Primary-key columns of a stats table, for matching rows in verify.
SELECT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = to_regclass('stats.' || $1) AND i.indisprimary
ORDER BY array_position(i.indkey, a.attnum)

-- name: verify_keep_live
-- verify: a copy of one statistic's live rows of the tenant, kept in the
-- database (not in the worker's memory) while the statistic is recomputed in
-- the same transaction, which rolls back and drops it ({table} is from a fixed list).
CREATE TEMPORARY TABLE verify_live_{table} ON COMMIT DROP AS
SELECT to_jsonb(t) AS row FROM stats.{table} t WHERE t.tenant_id = $1

-- name: verify_differing_rows
-- verify: the rows that are in the live copy and not in the recomputation
-- ('live') or the other way round ('expected'). Equal rows stay in the
-- database; jsonb compares numbers by value.
WITH expected AS MATERIALIZED (
  SELECT to_jsonb(t) AS row FROM stats.{table} t WHERE t.tenant_id = $1
)
SELECT 'live' AS side, d.row
FROM (SELECT row FROM pg_temp.verify_live_{table}
      EXCEPT ALL SELECT row FROM expected) d
UNION ALL
SELECT 'expected', d.row
FROM (SELECT row FROM expected
      EXCEPT ALL SELECT row FROM pg_temp.verify_live_{table}) d

-- name: claim_backfill
-- The next tenant waiting for its first full recompute, locked for the
-- caller's transaction; other replicas skip it and take the next.
SELECT tenant_id, counted_matches,
       (SELECT count(*) FROM stats_worker.backfill) AS waiting
FROM stats_worker.backfill
ORDER BY queued_at, tenant_id
LIMIT 1
FOR UPDATE SKIP LOCKED

-- name: finish_backfill
DELETE FROM stats_worker.backfill WHERE tenant_id = $1

-- name: owe_invalidation
-- Tags owed for statistics changed outside a message (rebuild, backfill): due
-- now, sent by the worker's invalidator (or by the command that wrote them).
INSERT INTO stats_worker.callbacks (msg_ids, tags, next_attempt_at)
VALUES ('{}', $1::text[], now())
RETURNING id

-- name: send_leftover_messages
-- Trigger messages no commit sent (session_replication_role = replica): sent now.
SELECT stats.send_leftover_messages()
