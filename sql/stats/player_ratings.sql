-- stats.player_ratings, as the contract (../shared/contract/stats.md) defines it:
--   11. `stats.player_ratings` — PK `player_id`. `rating numeric(8,2)`,
--   `rated_matches int`. Elo over the tenant's counted matches in `(played_at,
--   match_id)` order, skipping a match in which either team has no players.
--   Every player starts at 1000. For a match, `Ra` and `Rb` are the means of
--   the current ratings of the players of team A and team B; `Ea = 1 / (1 +
--   10^((Rb - Ra) / 400))`; `Sa` is 1, 0.5 or 0 for A's win, draw or loss.
--   Each A player gains `32 * (Sa - Ea)`, each B player `32 * ((1 - Sa) - (1 -
--   Ea))`. Compute in full precision; round to two decimals only when storing
--   (float8 or numeric; results within 0.01 of the exact value are equal).
--   `rated_matches` counts the player's matches that were rated (not skipped).
--

-- 11. player_ratings: Elo, replayed from a position.
--
-- The history (stats.rating_steps) before the position stays; the tenant's
-- rated matches from there are replayed in order, starting from each player's
-- latest step before the position (1000 without one), and their steps replace
-- the history from the position on. A new match at the end replays just
-- itself. Ratings are float8 in memory and in the history, rounded only into
-- player_ratings.rating.
create or replace function stats.refresh_player_ratings(
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
    v_from_at timestamptz;
    v_from_id bigint;
    v_moved_at timestamptz;
    v_moved_id bigint;
    v_players bigint[];
    v_touched bigint[] := '{}';
    -- Players of the replayed matches; a player's index in this array is their
    -- index in v_rating and v_count.
    v_pids bigint[];
    v_rating float8[];
    v_count int[];
    v_match record;
    v_i int;
    v_mean_a float8;
    v_mean_b float8;
    v_expected_a float8;
    v_gain_a float8;
    v_gain_b float8;
    -- The new history, one element per rated appearance.
    v_steps int := 0;
    v_step_match bigint[] := '{}';
    v_step_player bigint[] := '{}';
    v_step_at timestamptz[] := '{}';
    v_step_rating float8[] := '{}';
    v_step_count int[] := '{}';
    v_replay bigint;
    v_written integer;
begin
    perform pg_advisory_xact_lock(hashtext('stats.player_ratings'), hashtext(p_tenant::text));
    v_players := stats.scope_players(p_tenant, p_matches, p_players);

    -- The position may have moved earlier since stats.message_scope looked:
    -- take the history of p_matches and their current positions again.
    select p.played_at, p.match_id
    into v_from_at, v_from_id
    from (
        select
            p_rating_from_at as played_at,
            coalesce(p_rating_from_id, -9223372036854775808) as match_id
        where p_rating_from_at is not null
        union all
        select rs.played_at, rs.match_id
        from stats.rating_steps as rs
        where rs.match_id = any (p_matches) and rs.tenant_id = p_tenant
        union all
        select m.played_at, m.match_id
        from stats.counted_matches as m
        where m.match_id = any (p_matches) and m.tenant_id = p_tenant
    ) as p
    order by p.played_at, p.match_id
    limit 1;

    if v_from_at is not null then
        -- A match replayed from here may still have steps at an older position
        -- before here (it moved, and its own message has not run yet). Those
        -- steps are wrong and everything after them too: start there instead.
        -- Driven from the tenant's matches: each one's steps are found by the
        -- primary key, so the check reads this tenant's few rows whatever the
        -- other tenants' histories hold and however their dates sort.
        loop
            select rs.played_at, rs.match_id
            into v_moved_at, v_moved_id
            from stats.counted_matches as m
            cross join lateral (
                select s.played_at, s.match_id
                from stats.rating_steps as s
                where s.match_id = m.match_id
                order by s.played_at
                limit 1
            ) as rs
            where m.tenant_id = p_tenant
                and (m.played_at, m.match_id) >= (v_from_at, v_from_id)
                and (rs.played_at, rs.match_id) < (v_from_at, v_from_id)
            order by rs.played_at, rs.match_id
            limit 1;
            exit when not found;
            v_from_at := v_moved_at;
            v_from_id := v_moved_id;
        end loop;

        select coalesce(array_agg(distinct mp.player_id order by mp.player_id), '{}')
        into v_pids
        from stats.counted_matches as m
        join public.match_players as mp on mp.match_id = m.match_id
        where m.tenant_id = p_tenant
            and (m.played_at, m.match_id) >= (v_from_at, v_from_id);

        -- Each player's rating before the position: their latest step before it.
        select
            coalesce(array_agg(coalesce(last.rating_after, 1000) order by u.idx), '{}'),
            coalesce(array_agg(coalesce(last.rated_count, 0) order by u.idx), '{}')
        into v_rating, v_count
        from unnest(v_pids) with ordinality as u (player_id, idx)
        left join lateral (
            select rs.rating_after, rs.rated_count
            from stats.rating_steps as rs
            where rs.tenant_id = p_tenant
                and rs.player_id = u.player_id
                and (rs.played_at, rs.match_id) < (v_from_at, v_from_id)
            order by rs.played_at desc, rs.match_id desc
            limit 1
        ) as last on true;

        -- The replayed appearances are read from the matches (materialized, so
        -- the planner cannot start from the players' whole careers instead).
        for v_match in
            with replayed as materialized (
                select m.match_id, m.played_at, m.team_a_score, m.team_b_score,
                    mp.player_id, mp.team
                from stats.counted_matches as m
                join public.match_players as mp on mp.match_id = m.match_id
                where m.tenant_id = p_tenant
                    and (m.played_at, m.match_id) >= (v_from_at, v_from_id)
            )
            select
                m.match_id,
                m.played_at,
                case
                    when m.team_a_score > m.team_b_score then 1.0
                    when m.team_a_score = m.team_b_score then 0.5
                    else 0.0
                end::float8 as score_a,
                array_agg(u.idx::int order by u.player_id) filter (where m.team = 'A')
                    as team_a,
                array_agg(u.idx::int order by u.player_id) filter (where m.team = 'B')
                    as team_b
            from replayed as m
            join unnest(v_pids) with ordinality as u (player_id, idx)
                on u.player_id = m.player_id
            group by m.match_id, m.played_at, m.team_a_score, m.team_b_score
            -- A match in which either team has no players is not rated.
            having bool_or(m.team = 'A') and bool_or(m.team = 'B')
            order by m.played_at, m.match_id
        loop
            v_mean_a := 0;
            foreach v_i in array v_match.team_a loop
                v_mean_a := v_mean_a + v_rating[v_i];
            end loop;
            v_mean_a := v_mean_a / cardinality(v_match.team_a);
            v_mean_b := 0;
            foreach v_i in array v_match.team_b loop
                v_mean_b := v_mean_b + v_rating[v_i];
            end loop;
            v_mean_b := v_mean_b / cardinality(v_match.team_b);

            v_expected_a := 1.0::float8
                / (1.0::float8 + power(10.0::float8, (v_mean_b - v_mean_a) / 400.0::float8));
            v_gain_a := 32.0::float8 * (v_match.score_a - v_expected_a);
            v_gain_b := 32.0::float8
                * ((1.0::float8 - v_match.score_a) - (1.0::float8 - v_expected_a));

            foreach v_i in array v_match.team_a || v_match.team_b loop
                if v_i = any (v_match.team_a) then
                    v_rating[v_i] := v_rating[v_i] + v_gain_a;
                else
                    v_rating[v_i] := v_rating[v_i] + v_gain_b;
                end if;
                v_count[v_i] := v_count[v_i] + 1;
                v_steps := v_steps + 1;
                v_step_match[v_steps] := v_match.match_id;
                v_step_player[v_steps] := v_pids[v_i];
                v_step_at[v_steps] := v_match.played_at;
                v_step_rating[v_steps] := v_rating[v_i];
                v_step_count[v_steps] := v_count[v_i];
            end loop;
        end loop;

        -- The new history from the position replaces the old one. Steps that
        -- exist in both are updated in place rather than deleted and inserted:
        -- mostly only columns that are in no index change, so a long replay is
        -- mostly heap-only updates (the table leaves room for them). Every step
        -- written is stamped with this replay's number, so the steps from the
        -- position on without it are the ones to delete: no join against the
        -- new history, whose plan could go wrong while the table's statistics
        -- lag behind a bulk load.
        v_replay := nextval('stats.rating_replays');
        insert into stats.rating_steps as rs (
            match_id, player_id, tenant_id, played_at, rating_after, rated_count, replay
        )
        select s.match_id, s.player_id, p_tenant, s.played_at, s.rating_after, s.rated_count,
            v_replay
        from unnest(v_step_match, v_step_player, v_step_at, v_step_rating, v_step_count)
            as s (match_id, player_id, played_at, rating_after, rated_count)
        on conflict (match_id, player_id) do update set
            tenant_id = excluded.tenant_id,
            played_at = excluded.played_at,
            rating_after = excluded.rating_after,
            rated_count = excluded.rated_count,
            replay = excluded.replay;

        with deleted as (
            delete from stats.rating_steps as rs
            where rs.tenant_id = p_tenant
                and (rs.played_at, rs.match_id) >= (v_from_at, v_from_id)
                and rs.replay <> v_replay
            returning rs.player_id
        )
        select coalesce(array_agg(distinct d.player_id), '{}') into v_touched from deleted as d;
    end if;

    -- Every player whose history changed, plus the scope's players (cheap, and
    -- it repairs a row that disagrees with the history).
    with touched as (
        select distinct t.player_id
        from unnest(v_touched || v_step_player || v_players) as t (player_id)
    ),
    computed as (
        select t.player_id, last.rating_after, last.rated_count
        from touched as t
        join lateral (
            select rs.rating_after, rs.rated_count
            from stats.rating_steps as rs
            where rs.tenant_id = p_tenant and rs.player_id = t.player_id
            order by rs.played_at desc, rs.match_id desc
            limit 1
        ) as last on true
    ),
    upserted as (
        insert into stats.player_ratings as r (player_id, tenant_id, rating, rated_matches)
        select c.player_id, p_tenant, round(c.rating_after::numeric, 2), c.rated_count
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            rating = excluded.rating,
            rated_matches = excluded.rated_matches
        where (r.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.player_ratings as r
        where r.tenant_id = p_tenant
            and r.player_id in (select t.player_id from touched as t)
            and not exists (select from computed as c where c.player_id = r.player_id)
        returning 1
    )
    select (select count(*) from upserted) + (select count(*) from deleted) into v_written;
    return v_written;
end
$$;
