-- Tenants never mix: every write to the marks of a player-keyed statistic is
-- scoped by the tenant of the recompute, as the statistics' own writes are. A
-- forged message naming another tenant's players (stopped earlier by the
-- message_scope query) could otherwise have deleted or taken over that
-- tenant's marks. Same function as in 0004, with the tenant in every filter.
create or replace function stats.set_marks(
    p_stat text,
    p_tenant uuid,
    p_recompute bigint[],
    p_fold bigint[],
    p_to_at timestamptz,
    p_to_id bigint,
    p_players bigint[],
    p_last_at timestamptz[],
    p_last_id bigint[],
    p_appearances int[],
    p_goals int[]
)
returns void
language sql
as $$
    with fresh as (
        select *
        from unnest(p_players, p_last_at, p_last_id, p_appearances, p_goals)
            as f (player_id, last_at, last_id, appearances, goals)
    ),
    marks as (
        select f.player_id, f.last_at as through_at, f.last_id as through_id,
            f.appearances, f.goals
        from fresh as f
        where f.player_id = any (p_recompute)
        union all
        select mk.player_id, p_to_at, p_to_id,
            mk.appearances + coalesce(f.appearances, 0), mk.goals + coalesce(f.goals, 0)
        from stats.player_marks as mk
        left join fresh as f on f.player_id = mk.player_id
        where mk.stat = p_stat
            and mk.tenant_id = p_tenant
            and mk.player_id = any (p_fold)
            and p_to_at is not null
    ),
    written as (
        insert into stats.player_marks as mk (
            stat, player_id, tenant_id, through_at, through_id, appearances, goals
        )
        select p_stat, m.player_id, p_tenant, m.through_at, m.through_id, m.appearances, m.goals
        from marks as m
        on conflict (stat, player_id) do update set
            tenant_id = excluded.tenant_id,
            through_at = excluded.through_at,
            through_id = excluded.through_id,
            appearances = excluded.appearances,
            goals = excluded.goals
        where mk.tenant_id = excluded.tenant_id and (mk.*) is distinct from (excluded.*)
    )
    delete from stats.player_marks as mk
    where mk.stat = p_stat
        and mk.tenant_id = p_tenant
        and mk.player_id = any (p_recompute)
        and not exists (select from marks as m where m.player_id = mk.player_id)
$$;
