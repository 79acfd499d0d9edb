-- stats.match_reports, as the contract (../shared/contract/stats.md) defines it:
--   5. `stats.match_reports` — PK `match_id`. `result text` (`A`, `B` or
--   `draw`), `team_a_score int`, `team_b_score int`, `top_scorer_id bigint
--   null` (most goals in the match if above 0; tie: lowest player_id), `mvp_id
--   bigint null` (a player with `is_mvp`; several: lowest player_id), `report
--   jsonb not null` (free form, for the match page). One row per counted
--   match, a counted match without lineup included (its scorer and MVP are
--   null); none for other matches.
--

-- 5. match_reports: the given matches; a counted match without lineup has a
-- report with no scorer and no MVP.
create or replace function stats.refresh_match_reports(
    p_tenant uuid,
    p_matches bigint[],
    p_players bigint[],
    p_seasons bigint[],
    p_rating_from_at timestamptz,
    p_rating_from_id bigint
)
returns integer
language plpgsql
set plan_cache_mode = force_custom_plan
as $$
declare
    v_written integer;
    v_applied stats.applied_match[];
begin
    perform pg_advisory_xact_lock(hashtext('stats.match_reports'), hashtext(p_tenant::text));

    with counted as (
        select m.*
        from stats.counted_matches as m
        where m.match_id = any (p_matches)
            and m.tenant_id = p_tenant
    ),
    computed as (
        select
            m.match_id,
            case
                when m.team_a_score > m.team_b_score then 'A'
                when m.team_a_score < m.team_b_score then 'B'
                else 'draw'
            end as result,
            m.team_a_score,
            m.team_b_score,
            (
                select mp.player_id
                from public.match_players as mp
                where mp.match_id = m.match_id and mp.goals > 0
                order by mp.goals desc, mp.player_id
                limit 1
            ) as top_scorer_id,
            (
                select min(mp.player_id)
                from public.match_players as mp
                where mp.match_id = m.match_id and mp.is_mvp
            ) as mvp_id,
            -- Ids only (no names): a renamed player is not a change of the match.
            -- Times in UTC so that the text does not depend on the session.
            jsonb_build_object(
                'played_at',
                to_char(m.played_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'season_id', m.season_id,
                'score', jsonb_build_object('A', m.team_a_score, 'B', m.team_b_score),
                'lineups', (
                    select jsonb_build_object(
                        'A', coalesce(jsonb_agg(p.entry order by p.player_id)
                            filter (where p.team = 'A'), '[]'::jsonb),
                        'B', coalesce(jsonb_agg(p.entry order by p.player_id)
                            filter (where p.team = 'B'), '[]'::jsonb)
                    )
                    from (
                        select mp.player_id, mp.team,
                            jsonb_build_object(
                                'player_id', mp.player_id,
                                'goals', mp.goals,
                                'assists', mp.assists,
                                'own_goals', mp.own_goals,
                                'is_mvp', mp.is_mvp
                            ) as entry
                        from public.match_players as mp
                        where mp.match_id = m.match_id
                    ) as p
                )
            ) as report
        from counted as m
    ),
    upserted as (
        insert into stats.match_reports as t (
            match_id, tenant_id, result, team_a_score, team_b_score, top_scorer_id,
            mvp_id, report
        )
        select
            c.match_id, p_tenant, c.result, c.team_a_score, c.team_b_score,
            c.top_scorer_id, c.mvp_id, c.report
        from computed as c
        on conflict (match_id) do update set
            tenant_id = excluded.tenant_id,
            result = excluded.result,
            team_a_score = excluded.team_a_score,
            team_b_score = excluded.team_b_score,
            top_scorer_id = excluded.top_scorer_id,
            mvp_id = excluded.mvp_id,
            report = excluded.report
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.match_reports as t
        where t.tenant_id = p_tenant
            and t.match_id = any (p_matches)
            and not exists (select from computed as c where c.match_id = t.match_id)
        returning 1
    )
    select
        (select count(*) from upserted) + (select count(*) from deleted),
        stats.applied_state(p_tenant, p_matches)
    into v_written, v_applied;

    perform stats.record_applied('match_reports', p_tenant, p_matches, v_applied);
    return v_written;
end
$$;
