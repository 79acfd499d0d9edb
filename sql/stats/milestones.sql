-- stats.milestones, as the contract (../shared/contract/stats.md) defines it:
--   10. `stats.milestones` — PK `(player_id, kind, threshold)`. `kind text`
--   (`appearances`, `goals`), `threshold int` (10, 25, 50, 100, 250, 500),
--   `match_id bigint`: the appearance at which the player's running total
--   first reached the threshold or more (a hat-trick from 9 to 12 goals
--   reaches 10).
--

-- 10. milestones: the appearance at which a running total first reached a
-- threshold. That appearance is the first one whose total is at least the
-- threshold while the total before it was below, so only crossing rows are
-- kept (a hat-trick from 9 to 12 crosses 10). A folding player's totals go on
-- from those of their mark.
create or replace function stats.refresh_milestones(
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
    perform pg_advisory_xact_lock(hashtext('stats.milestones'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'milestones', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'milestones', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
    running as (
        select
            f.player_id,
            f.match_id,
            f.played_at,
            f.goals,
            coalesce(mk.appearances, 0) + row_number() over so_far as appearances,
            coalesce(mk.goals, 0) + sum(f.goals) over so_far as goals_so_far
        from fresh as f
        left join stats.player_marks as mk
            on mk.stat = 'milestones'
            and mk.player_id = f.player_id
            and mk.player_id = any (v_plan.fold_players)
        window so_far as (
            partition by f.player_id
            order by f.played_at, f.match_id
            rows between unbounded preceding and current row
        )
    ),
    totals as (
        select r.player_id, r.match_id, r.played_at, t.kind, t.total_before, t.total_after
        from running as r
        cross join lateral (
            values
                ('appearances', r.appearances - 1, r.appearances),
                ('goals', r.goals_so_far - r.goals, r.goals_so_far)
        ) as t (kind, total_before, total_after)
    ),
    computed as (
        select distinct on (t.player_id, t.kind, th.threshold)
            t.player_id, t.kind, th.threshold, t.match_id
        from totals as t
        join (values (10), (25), (50), (100), (250), (500)) as th (threshold)
            on t.total_before < th.threshold and th.threshold <= t.total_after
        order by t.player_id, t.kind, th.threshold, t.played_at, t.match_id
    ),
    upserted as (
        insert into stats.milestones as t (player_id, kind, threshold, tenant_id, match_id)
        select c.player_id, c.kind, c.threshold, p_tenant, c.match_id
        from computed as c
        on conflict (player_id, kind, threshold) do update set
            tenant_id = excluded.tenant_id,
            match_id = excluded.match_id
        -- A folding player crosses a threshold again only after goals went
        -- down: the first time stands.
        where excluded.player_id = any (v_plan.recompute_players)
            and (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.milestones as t
        where t.tenant_id = p_tenant
            and t.player_id = any (v_plan.recompute_players)
            and not exists (
                select from computed as c
                where c.player_id = t.player_id
                    and c.kind = t.kind
                    and c.threshold = t.threshold
            )
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
        'milestones', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    perform stats.record_applied('milestones', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
