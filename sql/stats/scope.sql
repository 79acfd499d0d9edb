-- The statistics: what a message touches (stats.message_scope), one refresh
-- function per table, and the whole-tenant helpers (stats.rebuild_scope,
-- stats.refresh_all).
--
-- Every refresh function has the same signature
--     (p_tenant uuid, p_matches bigint[], p_players bigint[], p_seasons bigint[],
--      p_rating_from_at timestamptz, p_rating_from_id bigint) returns integer
-- and the same shape:
--   1. Its first statement takes a transaction advisory lock on (table, tenant),
--      so two messages of one tenant never interleave on one table while other
--      tenants go on. Everything else runs in later statements: in READ
--      COMMITTED each of them sees a snapshot taken after the lock, i.e. the
--      committed work of whoever held it before.
--   2. It brings its scope (players, seasons or matches) in line with the
--      source tables and upserts, skipping rows that did not change, then
--      deletes the scope's rows that have no source left. Season- and
--      match-scoped tables recompute from scratch. A player-keyed table
--      recomputes a player from all their appearances, unless the change lies
--      wholly after the player's mark (stats.player_marks): then it folds just
--      the appearances after the mark into the player's row, so that a new
--      match costs the same after 20 or 20,000 matches of history. Elo replays
--      from the change's position (stats.rating_steps). Either way the rows end
--      up as a recompute from scratch would leave them, and running a message
--      twice changes nothing (the second run finds the change at or before the
--      mark and recomputes).
--   3. It returns the number of rows written or deleted.
-- The ten of phase one run concurrently in separate transactions, which is why
-- none of them reads another's output. stats.refresh_hall_of_fame is phase two:
-- it runs after the ten have committed and reads their tables.
--
-- Plans. A message's recompute runs about a hundred statements; planning each
-- one for its values (force_custom_plan) cost 40 % of the backend's time on
-- PostgreSQL 15, where a language sql function is even parsed again on every
-- call. So the helpers below are plpgsql with cached generic plans
-- (force_generic_plan), and so are the refresh functions whose statements are
-- all driven from the keys at hand: a generic plan of a lookup by primary key
-- is the plan a custom one would pick. Two refresh functions plan for the
-- values (force_custom_plan), because their generic plans measured far worse:
-- player_ratings (the replay's join order depends on how far back the change
-- lies: 80 ms generic against 3.5 ms for an appended match) and match_reports
-- (a rebuild's thousands of matches, planned as if they were ten: minutes
-- instead of a second). docs/performance.md has the measurements. No
-- statement may depend on a plan's guess of an array's size for more than a
-- constant factor: where a guess could make it quadratic (an anti-join of two
-- row sets), it is written as a set difference or a key lookup instead.
--
-- Each function also adds the current lineups and seasons of p_matches to the
-- scope it was given. stats.message_scope already did, but the match may have
-- changed since; reading it again under the lock costs one index lookup.
--
-- Positions in a tenant's order of matches are (played_at, match_id) pairs
-- compared as rows. The earliest position a change may touch travels as
-- (p_rating_from_at, p_rating_from_id); "from the very beginning" is
-- ('-infinity', -9223372036854775808), the position before any match.

-- p_players plus everyone currently in the lineup of p_matches (tenant's only).
create or replace function stats.scope_players(p_tenant uuid, p_matches bigint[], p_players bigint[])
returns bigint[]
language plpgsql
stable
set plan_cache_mode = force_generic_plan
as $$
begin
    return (
    select coalesce(array_agg(s.player_id order by s.player_id), '{}')
    from (
        select unnest(p_players) as player_id
        union
        -- The tenant's matches among p_matches first (by primary key), then
        -- their lineups: a join could be planned as a hash of every match of
        -- the tenant, a cost that grows with its history.
        select mp.player_id
        from public.match_players as mp
        where mp.match_id = any (array(
            select m.id
            from public.matches as m
            where m.id = any (p_matches)
                and m.tenant_id = p_tenant
        ))
    ) as s
    where s.player_id is not null
    );
end
$$;

-- p_seasons plus the current seasons of p_matches (tenant's only).
create or replace function stats.scope_seasons(p_tenant uuid, p_matches bigint[], p_seasons bigint[])
returns bigint[]
language plpgsql
stable
set plan_cache_mode = force_generic_plan
as $$
begin
    return (
    select coalesce(array_agg(s.season_id order by s.season_id), '{}')
    from (
        select unnest(p_seasons) as season_id
        union
        select m.season_id
        from public.matches as m
        where m.id = any (p_matches)
            and m.tenant_id = p_tenant
    ) as s
    where s.season_id is not null
    );
end
$$;

-- How a player-keyed refresh covers its players (see stats.player_marks):
--   fold_players       fold the appearances after their mark of p_stat;
--   recompute_players  are recomputed from all their appearances;
--   fold_to_at/_id     the latest current position of p_matches: folding goes
--                      up to it, and it becomes the folding players' mark;
--   fold_matches       the tenant's counted matches after the earliest mark of
--                      the folding players, up to fold_to: what they may have
--                      played since their mark.
-- A player folds when the earliest position the change may touch (p_from, or
-- a current position of p_matches if earlier) lies after their mark, so that
-- nothing their rows cover has changed. Without a mark, or when nothing says
-- where the change lies, the player is recomputed.
create or replace function stats.plan_refresh(
    p_stat text,
    p_tenant uuid,
    p_players bigint[],
    p_matches bigint[],
    p_from_at timestamptz,
    p_from_id bigint
)
returns table (
    fold_players bigint[],
    recompute_players bigint[],
    fold_to_at timestamptz,
    fold_to_id bigint,
    fold_matches bigint[]
)
language plpgsql
stable
set plan_cache_mode = force_generic_plan
as $$
declare
    v_from_at timestamptz := p_from_at;
    v_from_id bigint := coalesce(p_from_id, -9223372036854775808);
    v_first_at timestamptz;
    v_first_id bigint;
    v_low_at timestamptz;
    v_low_id bigint;
begin
    select m.played_at, m.match_id
    into v_first_at, v_first_id
    from stats.counted_matches as m
    where m.match_id = any (p_matches) and m.tenant_id = p_tenant
    order by m.played_at, m.match_id
    limit 1;
    if v_first_at is not null
        and (v_from_at is null or (v_first_at, v_first_id) < (v_from_at, v_from_id))
    then
        v_from_at := v_first_at;
        v_from_id := v_first_id;
    end if;

    select m.played_at, m.match_id
    into fold_to_at, fold_to_id
    from stats.counted_matches as m
    where m.match_id = any (p_matches) and m.tenant_id = p_tenant
    order by m.played_at desc, m.match_id desc
    limit 1;

    select
        coalesce(array_agg(s.player_id order by s.player_id) filter (where s.folds), '{}'),
        coalesce(array_agg(s.player_id order by s.player_id) filter (where not s.folds), '{}')
    into fold_players, recompute_players
    from (
        select
            p.player_id,
            coalesce((v_from_at, v_from_id) > (mk.through_at, mk.through_id), false) as folds
        from unnest(p_players) as p (player_id)
        left join stats.player_marks as mk
            on mk.stat = p_stat and mk.player_id = p.player_id and mk.tenant_id = p_tenant
    ) as s;

    fold_matches := '{}';
    if fold_to_at is not null and cardinality(fold_players) > 0 then
        select mk.through_at, mk.through_id
        into v_low_at, v_low_id
        from stats.player_marks as mk
        where mk.stat = p_stat and mk.player_id = any (fold_players)
        order by mk.through_at, mk.through_id
        limit 1;

        select coalesce(array_agg(m.match_id), '{}')
        into fold_matches
        from stats.counted_matches as m
        where m.tenant_id = p_tenant
            and (m.played_at, m.match_id) > (v_low_at, v_low_id)
            and (m.played_at, m.match_id) <= (fold_to_at, fold_to_id);
    end if;
    return next;
end
$$;

-- The appearances a player-keyed refresh works from (see stats.plan_refresh):
-- every appearance of p_recompute, and those of p_fold after their mark of
-- p_stat, in p_fold_matches, up to (p_to_at, p_to_id). The second part starts
-- from the few matches since the marks, not from the players' histories.
create or replace function stats.fresh_appearances(
    p_stat text,
    p_tenant uuid,
    p_recompute bigint[],
    p_fold bigint[],
    p_fold_matches bigint[],
    p_to_at timestamptz,
    p_to_id bigint
)
returns setof stats.appearances
language sql
stable
as $$
    select a.*
    from stats.appearances as a
    where a.tenant_id = p_tenant
        and a.player_id = any (p_recompute)
    union all
    select a.*
    from stats.appearances as a
    join stats.player_marks as mk on mk.stat = p_stat and mk.player_id = a.player_id
    where a.tenant_id = p_tenant
        and a.match_id = any (p_fold_matches)
        and a.player_id = any (p_fold)
        and (a.played_at, a.match_id) > (mk.through_at, mk.through_id)
        and (a.played_at, a.match_id) <= (p_to_at, p_to_id)
$$;

-- Moves the marks of p_stat after a refresh. p_players (with their last
-- appearance and counts) are the players that had fresh appearances. A
-- recomputed player's mark is their last appearance (none: no mark); a
-- folding player's mark moves to p_to, their running totals adding the fresh
-- counts.
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
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
begin
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
        and not exists (select from marks as m where m.player_id = mk.player_id);
end
$$;

-- The bookkeeping. Each statistic records, per match it applied, the season,
-- position and lineup it applied the match with (stats.applied_by_stat), so
-- that a later message for the match still finds the old season, position and
-- players after the match moved, lost players or stopped counting. A
-- statistic's function takes the state of its matches in its main statement,
-- where it reads the source rows it computes from: stats.applied_state is
-- STABLE, so it sees that statement's snapshot, not a later one. It then writes
-- it with stats.record_applied in the same transaction. The record therefore
-- says exactly what the committed statistic holds, whatever the app or another
-- replica does before, between or after the statistics of one message.
create or replace function stats.applied_state(p_tenant uuid, p_matches bigint[])
returns stats.applied_match[]
language plpgsql
stable
set plan_cache_mode = force_generic_plan
as $$
begin
    return (
    select coalesce(
        array_agg(
            row(
                m.match_id,
                m.season_id,
                m.played_at,
                array(
                    select mp.player_id
                    from public.match_players as mp
                    where mp.match_id = m.match_id
                    order by mp.player_id
                )
            )::stats.applied_match
        ),
        '{}'
    )
    from stats.counted_matches as m
    where m.match_id = any (p_matches)
        and m.tenant_id = p_tenant
    );
end
$$;

-- p_state (from stats.applied_state) becomes what p_stat applied of p_matches:
-- a match in it is recorded as it was seen, a match of p_matches not in it no
-- longer counts and leaves the record. Only p_tenant's rows are touched.
create or replace function stats.record_applied(
    p_stat text,
    p_tenant uuid,
    p_matches bigint[],
    p_state stats.applied_match[]
)
returns void
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
begin
    with seen as (
        select s.match_id, s.season_id, s.played_at, s.player_ids
        from unnest(p_state) as s
    ),
    -- The matches that left go by key from a set difference: an anti-join
    -- with seen, whose size a plan can only guess, was planned as a nested
    -- loop, quadratic in a rebuild's thousands of matches.
    gone as (
        delete from stats.applied_by_stat as ab
        where ab.stat = p_stat
            and ab.tenant_id = p_tenant
            and ab.match_id = any (array(
                select unnest(p_matches)
                except
                select s.match_id from seen as s
            ))
    )
    insert into stats.applied_by_stat as ab (
        match_id, tenant_id, stat, season_id, played_at, player_ids
    )
    select s.match_id, p_tenant, p_stat, s.season_id, s.played_at, s.player_ids
    from seen as s
    on conflict (match_id, tenant_id, stat) do update set
        season_id = excluded.season_id,
        played_at = excluded.played_at,
        player_ids = excluded.player_ids
    where (ab.*) is distinct from (excluded.*);
end
$$;

-- What a batch of changed matches of one tenant touches. Besides the current
-- state of the matches it adds what the statistics may still hold from their
-- previous state: the match as each statistic last applied it
-- (stats.applied_by_stat) and its
-- Elo steps. That is what lets a bare {"tenant_id", "match_id"} message for a
-- match that moved to another season or date, lost players, or was deleted
-- still recompute the old season and players. The hints of trigger messages
-- (p_extra_players, p_extra_seasons, p_since) cover the same ground again,
-- also when the match changed twice before the worker saw it.
--
-- rating_from is the earliest position whose statistics may change: Elo
-- replays from there, and player-keyed tables fold a player's new appearances
-- only when it lies after the player's mark. It is the least of the current
-- position of each match that counts now, the positions it held when last
-- applied by any statistic (stats.applied_by_stat) and in the Elo history, and
-- (p_since, -9223372036854775808). Null when none applies: then no match of the
-- batch counts or ever counted.
create or replace function stats.message_scope(
    p_tenant uuid,
    p_matches bigint[],
    p_extra_players bigint[],
    p_extra_seasons bigint[],
    p_since timestamptz
)
returns table (
    player_ids bigint[],
    season_ids bigint[],
    rating_from_at timestamptz,
    rating_from_id bigint
)
language plpgsql
volatile
set plan_cache_mode = force_generic_plan
as $$
begin
    return query
    with players as (
        select unnest(stats.scope_players(p_tenant, p_matches, p_extra_players)) as player_id
        union
        select unnest(am.player_ids)
        from stats.applied_by_stat as am
        where am.match_id = any (p_matches)
            and am.tenant_id = p_tenant
        union
        select rs.player_id
        from stats.rating_steps as rs
        where rs.match_id = any (p_matches)
            and rs.tenant_id = p_tenant
    ),
    seasons as (
        select unnest(stats.scope_seasons(p_tenant, p_matches, p_extra_seasons)) as season_id
        union
        select am.season_id
        from stats.applied_by_stat as am
        where am.match_id = any (p_matches)
            and am.tenant_id = p_tenant
    ),
    positions as (
        select m.played_at, m.match_id
        from stats.counted_matches as m
        where m.match_id = any (p_matches)
            and m.tenant_id = p_tenant
        union all
        select am.played_at, am.match_id
        from stats.applied_by_stat as am
        where am.match_id = any (p_matches)
            and am.tenant_id = p_tenant
        union all
        select rs.played_at, rs.match_id
        from stats.rating_steps as rs
        where rs.match_id = any (p_matches)
            and rs.tenant_id = p_tenant
        union all
        select p_since, -9223372036854775808
        where p_since is not null
    ),
    first_position as (
        select p.played_at, p.match_id
        from positions as p
        order by p.played_at, p.match_id
        limit 1
    )
    select
        (
            select coalesce(array_agg(p.player_id order by p.player_id), '{}')
            from players as p
            where p.player_id is not null
        ),
        (
            select coalesce(array_agg(s.season_id order by s.season_id), '{}')
            from seasons as s
            where s.season_id is not null
        ),
        (select f.played_at from first_position as f),
        (select f.match_id from first_position as f);
end
$$;

-- Everything of a tenant, for a rebuild or a verification: its matches (and
-- the ids the statistics still hold), its players (and the ids the statistics
-- still hold) and its seasons, with Elo replayed from the very beginning.
create or replace function stats.rebuild_scope(p_tenant uuid)
returns table (
    match_ids bigint[],
    player_ids bigint[],
    season_ids bigint[],
    rating_from_at timestamptz,
    rating_from_id bigint
)
language sql
volatile
as $$
    select
        (
            select coalesce(array_agg(s.id order by s.id), '{}')
            from (
                select m.id from public.matches as m where m.tenant_id = p_tenant
                union
                select r.match_id from stats.match_reports as r where r.tenant_id = p_tenant
                union
                select am.match_id from stats.applied_by_stat as am where am.tenant_id = p_tenant
            ) as s
        ),
        (
            select coalesce(array_agg(s.id order by s.id), '{}')
            from (
                select p.id from public.players as p where p.tenant_id = p_tenant
                union
                select mp.player_id
                from public.match_players as mp
                join public.matches as m on m.id = mp.match_id
                where m.tenant_id = p_tenant
                union
                select t.player_id from stats.player_totals as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.season_standings as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.personal_bests as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.player_form as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.player_streaks as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.partnerships as t where t.tenant_id = p_tenant
                union
                select t.partner_id from stats.partnerships as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.season_leaderboards as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.milestones as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.player_ratings as t where t.tenant_id = p_tenant
                union
                select t.player_id from stats.player_marks as t where t.tenant_id = p_tenant
            ) as s
        ),
        (
            select coalesce(array_agg(s.id order by s.id), '{}')
            from (
                select se.id from public.seasons as se where se.tenant_id = p_tenant
                union
                select m.season_id from public.matches as m where m.tenant_id = p_tenant
                union
                select t.season_id from stats.season_standings as t where t.tenant_id = p_tenant
                union
                select t.season_id from stats.season_leaderboards as t where t.tenant_id = p_tenant
            ) as s
            where s.id is not null
        ),
        '-infinity'::timestamptz,
        (-9223372036854775808)::bigint
$$;

-- All eleven in one transaction, in phase order (rebuilds, verification,
-- tests). The locks are taken in this fixed order and held to the end of the
-- transaction; a phase-one transaction of the worker holds only one of them.
create or replace function stats.refresh_all(
    p_tenant uuid,
    p_matches bigint[],
    p_players bigint[],
    p_seasons bigint[],
    p_rating_from_at timestamptz,
    p_rating_from_id bigint
)
returns void
language plpgsql
as $$
begin
    perform stats.refresh_player_totals(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_season_standings(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_personal_bests(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_match_reports(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_player_form(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_player_streaks(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_partnerships(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_season_leaderboards(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_milestones(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_player_ratings(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
    perform stats.refresh_hall_of_fame(
        p_tenant, p_matches, p_players, p_seasons, p_rating_from_at, p_rating_from_id);
end
$$;
