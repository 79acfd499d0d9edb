-- stats.season_leaderboards, as the contract (../shared/contract/stats.md) defines it:
--   9. `stats.season_leaderboards` — PK `(season_id, category, position)`.
--   `category text` (`goals`, `assists`, `mvps`, `clean_sheets`), `position
--   int` (1..10), `player_id bigint`, `value int`. The top ten players of the
--   season by value desc, player_id asc, counting only values above 0.
--

-- 9. season_leaderboards: top ten per season and category, values above 0.
create or replace function stats.refresh_season_leaderboards(
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
    v_seasons bigint[];
    v_written integer;
    v_applied stats.applied_match[];
begin
    perform pg_advisory_xact_lock(
        hashtext('stats.season_leaderboards'), hashtext(p_tenant::text)
    );
    v_seasons := stats.scope_seasons(p_tenant, p_matches, p_seasons);

    with per_player as (
        select
            a.season_id,
            a.player_id,
            sum(a.goals)::int as goals,
            sum(a.assists)::int as assists,
            count(*) filter (where a.is_mvp)::int as mvps,
            count(*) filter (where a.clean_sheet)::int as clean_sheets
        from stats.appearances as a
        where a.tenant_id = p_tenant
            and a.season_id = any (v_seasons)
        group by a.season_id, a.player_id
    ),
    ranked as (
        select
            pp.season_id,
            v.category,
            pp.player_id,
            v.value,
            row_number() over (
                partition by pp.season_id, v.category order by v.value desc, pp.player_id
            )::int as position
        from per_player as pp
        cross join lateral (
            values
                ('goals', pp.goals),
                ('assists', pp.assists),
                ('mvps', pp.mvps),
                ('clean_sheets', pp.clean_sheets)
        ) as v (category, value)
        where v.value > 0
    ),
    computed as (
        select r.* from ranked as r where r.position <= 10
    ),
    upserted as (
        insert into stats.season_leaderboards as t (
            season_id, category, position, tenant_id, player_id, value
        )
        select c.season_id, c.category, c.position, p_tenant, c.player_id, c.value
        from computed as c
        on conflict (season_id, category, position) do update set
            tenant_id = excluded.tenant_id,
            player_id = excluded.player_id,
            value = excluded.value
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.season_leaderboards as t
        where t.tenant_id = p_tenant
            and t.season_id = any (v_seasons)
            and not exists (
                select from computed as c
                where c.season_id = t.season_id
                    and c.category = t.category
                    and c.position = t.position
            )
        returning 1
    )
    select
        (select count(*) from upserted) + (select count(*) from deleted),
        stats.applied_state(p_tenant, p_matches)
    into v_written, v_applied;

    perform stats.record_applied('season_leaderboards', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
