-- Adopting an app with history: tenants whose counted matches are not all in the
-- statistics (every counted match has a match_reports row) wait here for a full
-- recompute. Filled once, when this migration runs; on a database whose stats
-- tables were created in the same migrate that is every tenant with a counted
-- match. migrate then works through the rows one tenant at a time
-- (stats_worker.backfill in worker/backfill.py); replicas share them with
-- FOR UPDATE SKIP LOCKED. Later changes reach the statistics through the
-- triggers, which are in place before this runs.
create table stats_worker.backfill (
    tenant_id uuid primary key,
    counted_matches bigint not null,
    queued_at timestamptz not null default now()
);

insert into stats_worker.backfill (tenant_id, counted_matches)
select m.tenant_id, count(*)
from public.matches as m
where m.status = 'completed' and m.team_a_score is not null and m.team_b_score is not null
group by m.tenant_id
having count(*) > (select count(*) from stats.match_reports as r where r.tenant_id = m.tenant_id);

-- STATS_READ_ROLES: the app's read access to the eleven tables of the contract,
-- not to the worker's bookkeeping. Row-level security per tenant is the app's
-- to add (README, "Exposing the statistics").
create function stats_worker.grant_stats_read(p_role text)
returns void
language plpgsql
as $$
declare
    v_table text;
begin
    execute format('grant usage on schema stats to %I', p_role);
    foreach v_table in array array[
        'player_totals', 'season_standings', 'personal_bests', 'hall_of_fame',
        'match_reports', 'player_form', 'player_streaks', 'partnerships',
        'season_leaderboards', 'milestones', 'player_ratings'
    ] loop
        execute format('grant select on stats.%I to %I', v_table, p_role);
    end loop;
end
$$;
