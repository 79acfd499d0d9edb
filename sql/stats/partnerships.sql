-- stats.partnerships, as the contract (../shared/contract/stats.md) defines it:
--   8. `stats.partnerships` — PK `(player_id, partner_id)` with `player_id <
--   partner_id`. `matches_together int`, `wins_together int`: counted matches
--   in which both were on the same team, and how many of those that team won.
--   Present when `matches_together > 0`.
--

-- 8. partnerships. Each pair belongs to its lower id: a scope player keeps the
-- pairs with team-mates of higher id. A pair changes only through a match both
-- played in, so its lower id is then in the scope; and folding the owner's
-- fresh appearances adds exactly the pair's fresh matches.
create or replace function stats.refresh_partnerships(
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
    perform pg_advisory_xact_lock(hashtext('stats.partnerships'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'partnerships', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'partnerships', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
            mate.player_id as partner_id,
            count(*)::int as matches_together,
            count(*) filter (where f.result = 'W')::int as wins_together
        from fresh as f
        join public.match_players as mate
            on mate.match_id = f.match_id
            and mate.team = f.team
            and mate.player_id > f.player_id
        group by f.player_id, mate.player_id
    ),
    computed as (
        select
            a.player_id,
            a.partner_id,
            coalesce(b.matches_together, 0) + a.matches_together as matches_together,
            coalesce(b.wins_together, 0) + a.wins_together as wins_together
        from added as a
        left join stats.partnerships as b
            on b.player_id = a.player_id
            and b.partner_id = a.partner_id
            and b.player_id = any (v_plan.fold_players)
    ),
    upserted as (
        insert into stats.partnerships as t (
            player_id, partner_id, tenant_id, matches_together, wins_together
        )
        select c.player_id, c.partner_id, p_tenant, c.matches_together, c.wins_together
        from computed as c
        on conflict (player_id, partner_id) do update set
            tenant_id = excluded.tenant_id,
            matches_together = excluded.matches_together,
            wins_together = excluded.wins_together
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.partnerships as t
        where t.tenant_id = p_tenant
            and t.player_id = any (v_plan.recompute_players)
            and not exists (
                select from computed as c
                where c.player_id = t.player_id and c.partner_id = t.partner_id
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
        'partnerships', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    perform stats.record_applied('partnerships', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
