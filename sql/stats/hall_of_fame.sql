-- stats.hall_of_fame, as the contract (../shared/contract/stats.md) defines it:
--   4. `stats.hall_of_fame` — PK `(tenant_id, record)`. `record text`,
--   `player_id bigint`, `value int`, `match_id bigint null`. Records:
--   `most_appearances`, `most_goals`, `most_assists`, `most_wins`,
--   `most_mvps`, `longest_win_streak` (career values; tie: lowest player_id;
--   `match_id` null), and `most_goals_in_match` (tie: earliest match by
--   `(played_at, match_id)`, then lowest player_id; `match_id` set). A record
--   whose best value is 0 is absent.
--

-- 4. hall_of_fame (phase two): the tenant's records, derived from the phase-one
-- tables instead of every appearance of the tenant.
--
-- most_goals_in_match comes from personal_bests: the record holder's match is
-- the earliest (played_at, match_id) among all appearances with the maximum
-- goals G, ties to the lowest player_id. For the player who scored G there,
-- no earlier appearance of theirs has G goals (it would win the record), so
-- that match is exactly their most_goals_match_id (their earliest appearance
-- with their best, which is G). Hence the record is the personal best with
-- most_goals = G whose match is earliest, then whose player_id is lowest.
create or replace function stats.refresh_hall_of_fame(
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
    v_written integer;
begin
    perform pg_advisory_xact_lock(hashtext('stats.hall_of_fame'), hashtext(p_tenant::text));

    with career as (
        select 'most_appearances' as record, t.player_id, t.appearances as value
        from stats.player_totals as t where t.tenant_id = p_tenant
        union all
        select 'most_goals', t.player_id, t.goals
        from stats.player_totals as t where t.tenant_id = p_tenant
        union all
        select 'most_assists', t.player_id, t.assists
        from stats.player_totals as t where t.tenant_id = p_tenant
        union all
        select 'most_wins', t.player_id, t.wins
        from stats.player_totals as t where t.tenant_id = p_tenant
        union all
        select 'most_mvps', t.player_id, t.mvps
        from stats.player_totals as t where t.tenant_id = p_tenant
        union all
        select 'longest_win_streak', s.player_id, s.longest_win
        from stats.player_streaks as s where s.tenant_id = p_tenant
    ),
    career_records as (
        select distinct on (c.record) c.record, c.player_id, c.value, null::bigint as match_id
        from career as c
        where c.value > 0
        order by c.record, c.value desc, c.player_id
    ),
    match_record as (
        select 'most_goals_in_match' as record, b.player_id, b.most_goals as value,
            b.most_goals_match_id as match_id
        from stats.personal_bests as b
        left join public.matches as m on m.id = b.most_goals_match_id
        where b.tenant_id = p_tenant
            and b.most_goals > 0
        order by b.most_goals desc, m.played_at, b.most_goals_match_id, b.player_id
        limit 1
    ),
    computed as (
        select * from career_records
        union all
        select * from match_record
    ),
    upserted as (
        insert into stats.hall_of_fame as t (tenant_id, record, player_id, value, match_id)
        select p_tenant, c.record, c.player_id, c.value, c.match_id
        from computed as c
        on conflict (tenant_id, record) do update set
            player_id = excluded.player_id,
            value = excluded.value,
            match_id = excluded.match_id
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.hall_of_fame as t
        where t.tenant_id = p_tenant
            and not exists (select from computed as c where c.record = t.record)
        returning 1
    )
    select (select count(*) from upserted) + (select count(*) from deleted) into v_written;

    return v_written;
end
$$;
