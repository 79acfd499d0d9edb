-- Writing a synthetic league the way the app does (demo, benchmark).

-- name: disable_enqueue_triggers
-- For bulk history only, inside its transaction; needs a superuser (as on the
-- embedded server). The rows loaded this way are then covered by a rebuild.
SET LOCAL session_replication_role = replica

-- name: record_line
UPDATE match_players
SET goals = $3, assists = $4, own_goals = $5, is_mvp = $6
WHERE match_id = $1 AND player_id = $2

-- name: complete_match
UPDATE matches SET status = $2, team_a_score = $3, team_b_score = $4 WHERE id = $1

-- name: demo_standings
SELECT s.position, p.name, s.played, s.wins, s.draws, s.losses, s.goals, s.assists, s.points
FROM stats.season_standings s JOIN players p ON p.id = s.player_id
WHERE s.season_id = $1
ORDER BY s.position
LIMIT $2

-- name: demo_latest_season
SELECT se.id, se.name, t.name AS tenant
FROM seasons se JOIN tenants t ON t.id = se.tenant_id
WHERE se.tenant_id = $1 AND EXISTS (SELECT 1 FROM stats.season_standings s WHERE s.season_id = se.id)
ORDER BY se.starts_on DESC NULLS LAST, se.id DESC
LIMIT 1

-- name: demo_hall_of_fame
SELECT h.record, p.name, h.value, h.match_id
FROM stats.hall_of_fame h JOIN players p ON p.id = h.player_id
WHERE h.tenant_id = $1
ORDER BY h.record

-- name: demo_match_report
SELECT r.result, r.team_a_score, r.team_b_score, ts.name AS top_scorer, mvp.name AS mvp,
       m.played_at, se.name AS season
FROM stats.match_reports r
JOIN matches m ON m.id = r.match_id
LEFT JOIN seasons se ON se.id = m.season_id
LEFT JOIN players ts ON ts.id = r.top_scorer_id
LEFT JOIN players mvp ON mvp.id = r.mvp_id
WHERE r.match_id = $1

-- name: demo_top_ratings
SELECT p.name, r.rating, r.rated_matches, f.last5
FROM stats.player_ratings r
JOIN players p ON p.id = r.player_id
LEFT JOIN stats.player_form f ON f.player_id = r.player_id
WHERE r.tenant_id = $1
ORDER BY r.rating DESC, p.id
LIMIT $2

-- name: settled_match_run
SELECT finished_at FROM stats_worker.job_runs
WHERE queue_name = $1 AND match_id = $2 AND status = 'succeeded'
LIMIT 1

-- name: soak_correct_score
-- The soak's steady load: a score corrected, one message through the triggers.
UPDATE public.matches SET team_a_score = $2 WHERE id = $1

-- name: soak_settled
SELECT count(*) FROM stats_worker.job_runs WHERE status IN ('succeeded', 'dead')

-- name: soak_pending
-- Messages not settled yet, and invalidations the flaky app has not taken yet.
SELECT (SELECT count(*) FROM stats_worker.job_runs WHERE status = 'running')
     + (SELECT queue_length FROM pgmq.metrics(stats.queue_name()))
