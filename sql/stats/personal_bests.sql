-- stats.personal_bests, as the contract (../shared/contract/stats.md) defines it:
--   3. `stats.personal_bests` — PK `player_id`. `most_goals int`,
--   `most_goals_match_id bigint`, `most_assists int`, `most_assists_match_id
--   bigint`, `biggest_win_margin int null`, `biggest_win_match_id bigint
--   null`. Best single appearance; a tie goes to the earliest appearance. A
--   best of 0 names the player's first appearance. Margin and its match are
--   null if the player never won.
--

-- 3. personal_bests: the best appearance per measure, earliest on a tie, so a
-- best of 0 names the first appearance; no margin without a win. Fresh
-- appearances come after a folding player's row, so they replace a best only
-- when strictly better.
create or replace function stats.refresh_personal_bests(
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
    perform pg_advisory_xact_lock(hashtext('stats.personal_bests'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'personal_bests', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'personal_bests', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
    best_goals as (
        select distinct on (f.player_id) f.player_id, f.goals, f.match_id
        from fresh as f
        order by f.player_id, f.goals desc, f.played_at, f.match_id
    ),
    best_assists as (
        select distinct on (f.player_id) f.player_id, f.assists, f.match_id
        from fresh as f
        order by f.player_id, f.assists desc, f.played_at, f.match_id
    ),
    best_margin as (
        select distinct on (f.player_id)
            f.player_id, f.own_score - f.other_score as margin, f.match_id
        from fresh as f
        where f.result = 'W'
        order by f.player_id, f.own_score - f.other_score desc, f.played_at, f.match_id
    ),
    computed as (
        select
            g.player_id,
            case when better.goals then g.goals else b.most_goals end as most_goals,
            case when better.goals then g.match_id else b.most_goals_match_id end
                as most_goals_match_id,
            case when better.assists then s.assists else b.most_assists end as most_assists,
            case when better.assists then s.match_id else b.most_assists_match_id end
                as most_assists_match_id,
            case when better.margin then w.margin else b.biggest_win_margin end
                as biggest_win_margin,
            case when better.margin then w.match_id else b.biggest_win_match_id end
                as biggest_win_match_id
        from best_goals as g
        join best_assists as s on s.player_id = g.player_id
        left join best_margin as w on w.player_id = g.player_id
        left join stats.personal_bests as b
            on b.player_id = g.player_id and b.player_id = any (v_plan.fold_players)
        cross join lateral (
            select
                b.player_id is null or g.goals > b.most_goals as goals,
                b.player_id is null or s.assists > b.most_assists as assists,
                w.player_id is not null
                    and (b.biggest_win_margin is null or w.margin > b.biggest_win_margin)
                    as margin
        ) as better
    ),
    upserted as (
        insert into stats.personal_bests as t (
            player_id, tenant_id, most_goals, most_goals_match_id, most_assists,
            most_assists_match_id, biggest_win_margin, biggest_win_match_id
        )
        select
            c.player_id, p_tenant, c.most_goals, c.most_goals_match_id, c.most_assists,
            c.most_assists_match_id, c.biggest_win_margin, c.biggest_win_match_id
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            most_goals = excluded.most_goals,
            most_goals_match_id = excluded.most_goals_match_id,
            most_assists = excluded.most_assists,
            most_assists_match_id = excluded.most_assists_match_id,
            biggest_win_margin = excluded.biggest_win_margin,
            biggest_win_match_id = excluded.biggest_win_match_id
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.personal_bests as t
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
        'personal_bests', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    perform stats.record_applied('personal_bests', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
