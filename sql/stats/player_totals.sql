-- stats.player_totals, as the contract (../shared/contract/stats.md) defines it:
--   1. `stats.player_totals` — PK `player_id`. `appearances`, `wins`, `draws`,
--   `losses`, `goals`, `assists`, `own_goals`, `clean_sheets`, `mvps`,
--   `points` (all `int`). Present for players with at least one appearance.
--

-- 1. player_totals: career totals. A folding player's row goes on from where it
-- stands; a recomputed player's starts from nothing.
create or replace function stats.refresh_player_totals(
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
    perform pg_advisory_xact_lock(hashtext('stats.player_totals'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'player_totals', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'player_totals', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
    added as (
        select
            f.player_id,
            count(*)::int as appearances,
            count(*) filter (where f.result = 'W')::int as wins,
            count(*) filter (where f.result = 'D')::int as draws,
            count(*) filter (where f.result = 'L')::int as losses,
            sum(f.goals)::int as goals,
            sum(f.assists)::int as assists,
            sum(f.own_goals)::int as own_goals,
            count(*) filter (where f.clean_sheet)::int as clean_sheets,
            count(*) filter (where f.is_mvp)::int as mvps,
            sum(f.points)::int as points
        from fresh as f
        group by f.player_id
    ),
    computed as (
        select
            a.player_id,
            coalesce(t.appearances, 0) + a.appearances as appearances,
            coalesce(t.wins, 0) + a.wins as wins,
            coalesce(t.draws, 0) + a.draws as draws,
            coalesce(t.losses, 0) + a.losses as losses,
            coalesce(t.goals, 0) + a.goals as goals,
            coalesce(t.assists, 0) + a.assists as assists,
            coalesce(t.own_goals, 0) + a.own_goals as own_goals,
            coalesce(t.clean_sheets, 0) + a.clean_sheets as clean_sheets,
            coalesce(t.mvps, 0) + a.mvps as mvps,
            coalesce(t.points, 0) + a.points as points
        from added as a
        left join stats.player_totals as t
            on t.player_id = a.player_id and t.player_id = any (v_plan.fold_players)
    ),
    upserted as (
        insert into stats.player_totals as t (
            player_id, tenant_id, appearances, wins, draws, losses, goals, assists,
            own_goals, clean_sheets, mvps, points
        )
        select
            c.player_id, p_tenant, c.appearances, c.wins, c.draws, c.losses, c.goals,
            c.assists, c.own_goals, c.clean_sheets, c.mvps, c.points
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            appearances = excluded.appearances,
            wins = excluded.wins,
            draws = excluded.draws,
            losses = excluded.losses,
            goals = excluded.goals,
            assists = excluded.assists,
            own_goals = excluded.own_goals,
            clean_sheets = excluded.clean_sheets,
            mvps = excluded.mvps,
            points = excluded.points
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.player_totals as t
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
        'player_totals', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    perform stats.record_applied('player_totals', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
