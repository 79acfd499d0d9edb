-- stats.player_form, as the contract (../shared/contract/stats.md) defines it:
--   6. `stats.player_form` — PK `player_id`. `last5 text`: the results of the
--   player's last five appearances, most recent first, e.g. `WDLWW` (fewer
--   letters if fewer appearances); `form_points int`: their points.
--

-- 6. player_form: the last five results, most recent first. Fresh results go
-- in front of a folding player's; the points are read off the letters.
create or replace function stats.refresh_player_form(
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
    perform pg_advisory_xact_lock(hashtext('stats.player_form'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'player_form', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'player_form', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
    recent as (
        select r.player_id, string_agg(r.result, '' order by r.recency) as results
        from (
            select
                f.player_id,
                f.result,
                row_number() over (
                    partition by f.player_id order by f.played_at desc, f.match_id desc
                ) as recency
            from fresh as f
        ) as r
        where r.recency <= 5
        group by r.player_id
    ),
    computed as (
        select
            r.player_id,
            l.last5,
            3 * (length(l.last5) - length(replace(l.last5, 'W', '')))
                + (length(l.last5) - length(replace(l.last5, 'D', ''))) as form_points
        from recent as r
        left join stats.player_form as b
            on b.player_id = r.player_id and b.player_id = any (v_plan.fold_players)
        cross join lateral (select left(r.results || coalesce(b.last5, ''), 5) as last5) as l
    ),
    upserted as (
        insert into stats.player_form as t (player_id, tenant_id, last5, form_points)
        select c.player_id, p_tenant, c.last5, c.form_points
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            last5 = excluded.last5,
            form_points = excluded.form_points
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.player_form as t
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
        'player_form', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    perform stats.record_applied('player_form', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
