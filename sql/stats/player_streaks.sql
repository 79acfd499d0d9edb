-- stats.player_streaks, as the contract (../shared/contract/stats.md) defines it:
--   7. `stats.player_streaks` — PK `player_id`. `current_win`, `longest_win`,
--   `current_unbeaten` (W or D), `longest_unbeaten`, `current_scoring` (at
--   least one goal), `longest_scoring` (all `int`). Runs of consecutive
--   appearances; a current streak ends at the latest appearance.
--

-- 7. player_streaks: runs of consecutive appearances.
--
-- The fresh appearances are numbered (i) and, for each kind, the qualifying
-- ones so far counted (q). Along a run of qualifying appearances both grow by
-- one, so i - q is constant within a run and differs between runs: runs are
-- the groups of (player, i - q). A folding player's current run goes on into
-- the fresh appearances' leading run (lead); the current run afterwards is the
-- fresh trailing run (tail), or the old one plus all fresh appearances when
-- every one qualifies.
create or replace function stats.refresh_player_streaks(
    p_tenant uuid,
    p_matches bigint[],
    p_players bigint[],
    p_seasons bigint[],
    p_rating_from_at timestamptz,
    p_rating_from_id bigint
)
returns integer
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
    v_plan record;
    v_written integer;
    v_applied stats.applied_match[];
    v_mark_players bigint[];
    v_mark_at timestamptz[];
    v_mark_id bigint[];
    v_mark_appearances int[];
    v_mark_goals int[];
begin
    perform pg_advisory_xact_lock(hashtext('stats.player_streaks'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'player_streaks', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'player_streaks', p_tenant, v_plan.recompute_players, v_plan.fold_players,
            v_plan.fold_matches, v_plan.fold_to_at, v_plan.fold_to_id
        )
    ),
    fresh_totals as (
        select
            f.player_id,
            count(*)::int as appearances,
            sum(f.goals)::int as goals,
            max(f.played_at) as last_at,
            (array_agg(f.match_id order by f.played_at desc, f.match_id desc))[1] as last_id
        from fresh as f
        group by f.player_id
    ),
    numbered as (
        select
            f.player_id,
            f.result = 'W' as won,
            f.result <> 'L' as unbeaten,
            f.goals > 0 as scored,
            row_number() over so_far as i,
            count(*) filter (where f.result = 'W') over so_far as won_so_far,
            count(*) filter (where f.result <> 'L') over so_far as unbeaten_so_far,
            count(*) filter (where f.goals > 0) over so_far as scored_so_far
        from fresh as f
        window so_far as (
            partition by f.player_id
            order by f.played_at, f.match_id
            rows between unbounded preceding and current row
        )
    ),
    runs as (
        select n.player_id, 'win' as kind, count(*) as length
        from numbered as n where n.won
        group by n.player_id, n.i - n.won_so_far
        union all
        select n.player_id, 'unbeaten', count(*)
        from numbered as n where n.unbeaten
        group by n.player_id, n.i - n.unbeaten_so_far
        union all
        select n.player_id, 'scoring', count(*)
        from numbered as n where n.scored
        group by n.player_id, n.i - n.scored_so_far
    ),
    longest as (
        select
            r.player_id,
            max(r.length) filter (where r.kind = 'win') as win,
            max(r.length) filter (where r.kind = 'unbeaten') as unbeaten,
            max(r.length) filter (where r.kind = 'scoring') as scoring
        from runs as r
        group by r.player_id
    ),
    ends as (
        select
            n.player_id,
            count(*) as appearances,
            coalesce(min(n.i) filter (where not n.won) - 1, count(*)) as lead_win,
            count(*) - coalesce(max(n.i) filter (where not n.won), 0) as tail_win,
            coalesce(min(n.i) filter (where not n.unbeaten) - 1, count(*)) as lead_unbeaten,
            count(*) - coalesce(max(n.i) filter (where not n.unbeaten), 0) as tail_unbeaten,
            coalesce(min(n.i) filter (where not n.scored) - 1, count(*)) as lead_scoring,
            count(*) - coalesce(max(n.i) filter (where not n.scored), 0) as tail_scoring
        from numbered as n
        group by n.player_id
    ),
    computed as (
        select
            e.player_id,
            (case
                when e.lead_win = e.appearances then coalesce(b.current_win, 0) + e.appearances
                else e.tail_win
            end)::int as current_win,
            greatest(
                coalesce(b.longest_win, 0), coalesce(b.current_win, 0) + e.lead_win,
                coalesce(l.win, 0)
            )::int as longest_win,
            (case
                when e.lead_unbeaten = e.appearances
                    then coalesce(b.current_unbeaten, 0) + e.appearances
                else e.tail_unbeaten
            end)::int as current_unbeaten,
            greatest(
                coalesce(b.longest_unbeaten, 0),
                coalesce(b.current_unbeaten, 0) + e.lead_unbeaten,
                coalesce(l.unbeaten, 0)
            )::int as longest_unbeaten,
            (case
                when e.lead_scoring = e.appearances
                    then coalesce(b.current_scoring, 0) + e.appearances
                else e.tail_scoring
            end)::int as current_scoring,
            greatest(
                coalesce(b.longest_scoring, 0),
                coalesce(b.current_scoring, 0) + e.lead_scoring,
                coalesce(l.scoring, 0)
            )::int as longest_scoring
        from ends as e
        left join longest as l on l.player_id = e.player_id
        left join stats.player_streaks as b
            on b.player_id = e.player_id and b.player_id = any (v_plan.fold_players)
    ),
    upserted as (
        insert into stats.player_streaks as t (
            player_id, tenant_id, current_win, longest_win, current_unbeaten,
            longest_unbeaten, current_scoring, longest_scoring
        )
        select
            c.player_id, p_tenant, c.current_win, c.longest_win, c.current_unbeaten,
            c.longest_unbeaten, c.current_scoring, c.longest_scoring
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            current_win = excluded.current_win,
            longest_win = excluded.longest_win,
            current_unbeaten = excluded.current_unbeaten,
            longest_unbeaten = excluded.longest_unbeaten,
            current_scoring = excluded.current_scoring,
            longest_scoring = excluded.longest_scoring
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.player_streaks as t
        where t.tenant_id = p_tenant
            and t.player_id = any (v_plan.recompute_players)
            and not exists (select from computed as c where c.player_id = t.player_id)
        returning 1
    )
    select
        stats.applied_state(p_tenant, p_matches),
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_applied, v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances,
        v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'player_streaks', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    perform stats.record_applied('player_streaks', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
