-- stats.season_standings, as the contract (../shared/contract/stats.md) defines it:
--   2. `stats.season_standings` — PK `(season_id, player_id)`. `played`,
--   `wins`, `draws`, `losses`, `goals`, `assists`, `points`, `position` (all
--   `int`). Over counted matches of that season (matches with a null
--   `season_id` count in no season). `position` is 1, 2, 3, … within the
--   season, ordered by points desc, wins desc, goals desc, player_id asc.
--

-- 2. season_standings: whole seasons, because a position depends on everyone.
create or replace function stats.refresh_season_standings(
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
    perform pg_advisory_xact_lock(hashtext('stats.season_standings'), hashtext(p_tenant::text));
    v_seasons := stats.scope_seasons(p_tenant, p_matches, p_seasons);

    with per_player as (
        select
            a.season_id,
            a.player_id,
            count(*)::int as played,
            count(*) filter (where a.result = 'W')::int as wins,
            count(*) filter (where a.result = 'D')::int as draws,
            count(*) filter (where a.result = 'L')::int as losses,
            sum(a.goals)::int as goals,
            sum(a.assists)::int as assists,
            sum(a.points)::int as points
        from stats.appearances as a
        where a.tenant_id = p_tenant
            and a.season_id = any (v_seasons)
        group by a.season_id, a.player_id
    ),
    computed as (
        select
            pp.*,
            row_number() over (
                partition by pp.season_id
                order by pp.points desc, pp.wins desc, pp.goals desc, pp.player_id
            )::int as position
        from per_player as pp
    ),
    upserted as (
        insert into stats.season_standings as t (
            season_id, player_id, tenant_id, played, wins, draws, losses, goals, assists,
            points, position
        )
        select
            c.season_id, c.player_id, p_tenant, c.played, c.wins, c.draws, c.losses,
            c.goals, c.assists, c.points, c.position
        from computed as c
        on conflict (season_id, player_id) do update set
            tenant_id = excluded.tenant_id,
            played = excluded.played,
            wins = excluded.wins,
            draws = excluded.draws,
            losses = excluded.losses,
            goals = excluded.goals,
            assists = excluded.assists,
            points = excluded.points,
            position = excluded.position
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.season_standings as t
        where t.tenant_id = p_tenant
            and t.season_id = any (v_seasons)
            and not exists (
                select from computed as c
                where c.season_id = t.season_id and c.player_id = t.player_id
            )
        returning 1
    )
    select
        (select count(*) from upserted) + (select count(*) from deleted),
        stats.applied_state(p_tenant, p_matches)
    into v_written, v_applied;

    perform stats.record_applied('season_standings', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
