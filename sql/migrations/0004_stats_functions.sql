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
-- Each refresh function plans its statements for the values at hand
-- (plan_cache_mode = force_custom_plan). A cached generic plan would have to
-- guess how many players, matches and positions are involved; a wrong guess
-- turns a lookup of ten rows into a scan of the tenant, which costs far more
-- than planning.
--
-- Each function also adds the current lineups and seasons of p_matches to the
-- scope it was given. stats.message_scope already did, but the match may have
-- changed since; reading it again under the lock costs one index lookup.
--
-- Positions in a tenant's order of matches are (played_at, match_id) pairs
-- compared as rows. The earliest position a change may touch travels as
-- (p_rating_from_at, p_rating_from_id); "from the very beginning" is
-- ('-infinity', -9223372036854775808), the position before any match.

-- Matches that count (contract: completed with both scores).
create view stats.counted_matches as
select
    m.id as match_id,
    m.tenant_id,
    m.season_id,
    m.played_at,
    m.team_a_score,
    m.team_b_score
from public.matches as m
where m.status = 'completed'
    and m.team_a_score is not null
    and m.team_b_score is not null;

-- Appearances: one row per lineup row of a counted match, seen from the player.
-- Callers filter by tenant_id and player_id or season_id; the planner pushes
-- those filters down to the indexes of match_players and matches.
create view stats.appearances as
select
    m.tenant_id,
    mp.player_id,
    m.match_id,
    m.played_at,
    m.season_id,
    mp.team,
    mp.goals,
    mp.assists,
    mp.own_goals,
    mp.is_mvp,
    side.own_score,
    side.other_score,
    case
        when side.own_score > side.other_score then 'W'
        when side.own_score = side.other_score then 'D'
        else 'L'
    end as result,
    case
        when side.own_score > side.other_score then 3
        when side.own_score = side.other_score then 1
        else 0
    end as points,
    side.other_score = 0 as clean_sheet
from stats.counted_matches as m
join public.match_players as mp on mp.match_id = m.match_id
cross join lateral (
    select
        case when mp.team = 'A' then m.team_a_score else m.team_b_score end as own_score,
        case when mp.team = 'A' then m.team_b_score else m.team_a_score end as other_score
) as side;

-- p_players plus everyone currently in the lineup of p_matches (tenant's only).
create function stats.scope_players(p_tenant uuid, p_matches bigint[], p_players bigint[])
returns bigint[]
language sql
stable
as $$
    select coalesce(array_agg(s.player_id order by s.player_id), '{}')
    from (
        select unnest(p_players) as player_id
        union
        select mp.player_id
        from public.match_players as mp
        join public.matches as m on m.id = mp.match_id
        where mp.match_id = any (p_matches)
            and m.tenant_id = p_tenant
    ) as s
    where s.player_id is not null
$$;

-- p_seasons plus the current seasons of p_matches (tenant's only).
create function stats.scope_seasons(p_tenant uuid, p_matches bigint[], p_seasons bigint[])
returns bigint[]
language sql
stable
as $$
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
create function stats.plan_refresh(
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
create function stats.fresh_appearances(
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
create function stats.set_marks(
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
        where (mk.*) is distinct from (excluded.*)
    )
    delete from stats.player_marks as mk
    where mk.stat = p_stat
        and mk.player_id = any (p_recompute)
        and not exists (select from marks as m where m.player_id = mk.player_id)
$$;

-- What a batch of changed matches of one tenant touches. Besides the current
-- state of the matches it adds what the statistics may still hold from their
-- previous state: the match as last applied (stats.applied_matches) and its
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
-- applied (stats.applied_matches) and in the Elo history, and
-- (p_since, -9223372036854775808). Null when none applies: then no match of the
-- batch counts or ever counted.
create function stats.message_scope(
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
language sql
volatile
as $$
    with players as (
        select unnest(stats.scope_players(p_tenant, p_matches, p_extra_players)) as player_id
        union
        select unnest(am.player_ids)
        from stats.applied_matches as am
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
        from stats.applied_matches as am
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
        from stats.applied_matches as am
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
        (select f.match_id from first_position as f)
$$;

-- Everything of a tenant, for a rebuild or a verification: its matches (and
-- the ids the statistics still hold), its players (and the ids the statistics
-- still hold) and its seasons, with Elo replayed from the very beginning.
create function stats.rebuild_scope(p_tenant uuid)
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
                select am.match_id from stats.applied_matches as am where am.tenant_id = p_tenant
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

-- 1. player_totals: career totals. A folding player's row goes on from where it
-- stands; a recomputed player's starts from nothing.
create function stats.refresh_player_totals(
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
    v_plan record;
    v_written integer;
    v_mark_players bigint[];
    v_mark_at timestamptz[];
    v_mark_id bigint[];
    v_mark_appearances int[];
    v_mark_goals int[];
begin
    perform pg_advisory_xact_lock(hashtext('stats.player_totals'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'player_totals', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'player_totals', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
            count(*)::int as appearances,
            count(*) filter (where f.result = 'W')::int as wins,
            count(*) filter (where f.result = 'D')::int as draws,
            count(*) filter (where f.result = 'L')::int as losses,
            sum(f.goals)::int as goals,
            sum(f.assists)::int as assists,
            sum(f.own_goals)::int as own_goals,
            count(*) filter (where f.clean_sheet)::int as clean_sheets,
            count(*) filter (where f.is_mvp)::int as mvps,
            sum(f.points)::int as points
        from fresh as f
        group by f.player_id
    ),
    computed as (
        select
            a.player_id,
            coalesce(t.appearances, 0) + a.appearances as appearances,
            coalesce(t.wins, 0) + a.wins as wins,
            coalesce(t.draws, 0) + a.draws as draws,
            coalesce(t.losses, 0) + a.losses as losses,
            coalesce(t.goals, 0) + a.goals as goals,
            coalesce(t.assists, 0) + a.assists as assists,
            coalesce(t.own_goals, 0) + a.own_goals as own_goals,
            coalesce(t.clean_sheets, 0) + a.clean_sheets as clean_sheets,
            coalesce(t.mvps, 0) + a.mvps as mvps,
            coalesce(t.points, 0) + a.points as points
        from added as a
        left join stats.player_totals as t
            on t.player_id = a.player_id and t.player_id = any (v_plan.fold_players)
    ),
    upserted as (
        insert into stats.player_totals as t (
            player_id, tenant_id, appearances, wins, draws, losses, goals, assists,
            own_goals, clean_sheets, mvps, points
        )
        select
            c.player_id, p_tenant, c.appearances, c.wins, c.draws, c.losses, c.goals,
            c.assists, c.own_goals, c.clean_sheets, c.mvps, c.points
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            appearances = excluded.appearances,
            wins = excluded.wins,
            draws = excluded.draws,
            losses = excluded.losses,
            goals = excluded.goals,
            assists = excluded.assists,
            own_goals = excluded.own_goals,
            clean_sheets = excluded.clean_sheets,
            mvps = excluded.mvps,
            points = excluded.points
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.player_totals as t
        where t.tenant_id = p_tenant
            and t.player_id = any (v_plan.recompute_players)
            and not exists (select from computed as c where c.player_id = t.player_id)
        returning 1
    )
    select
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'player_totals', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    return v_written;
end
$$;

-- 2. season_standings: whole seasons, because a position depends on everyone.
create function stats.refresh_season_standings(
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
    v_seasons bigint[];
    v_written integer;
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
    select (select count(*) from upserted) + (select count(*) from deleted) into v_written;
    return v_written;
end
$$;

-- 3. personal_bests: the best appearance per measure, earliest on a tie, so a
-- best of 0 names the first appearance; no margin without a win. Fresh
-- appearances come after a folding player's row, so they replace a best only
-- when strictly better.
create function stats.refresh_personal_bests(
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
    v_plan record;
    v_written integer;
    v_mark_players bigint[];
    v_mark_at timestamptz[];
    v_mark_id bigint[];
    v_mark_appearances int[];
    v_mark_goals int[];
begin
    perform pg_advisory_xact_lock(hashtext('stats.personal_bests'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'personal_bests', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'personal_bests', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
    best_goals as (
        select distinct on (f.player_id) f.player_id, f.goals, f.match_id
        from fresh as f
        order by f.player_id, f.goals desc, f.played_at, f.match_id
    ),
    best_assists as (
        select distinct on (f.player_id) f.player_id, f.assists, f.match_id
        from fresh as f
        order by f.player_id, f.assists desc, f.played_at, f.match_id
    ),
    best_margin as (
        select distinct on (f.player_id)
            f.player_id, f.own_score - f.other_score as margin, f.match_id
        from fresh as f
        where f.result = 'W'
        order by f.player_id, f.own_score - f.other_score desc, f.played_at, f.match_id
    ),
    computed as (
        select
            g.player_id,
            case when better.goals then g.goals else b.most_goals end as most_goals,
            case when better.goals then g.match_id else b.most_goals_match_id end
                as most_goals_match_id,
            case when better.assists then s.assists else b.most_assists end as most_assists,
            case when better.assists then s.match_id else b.most_assists_match_id end
                as most_assists_match_id,
            case when better.margin then w.margin else b.biggest_win_margin end
                as biggest_win_margin,
            case when better.margin then w.match_id else b.biggest_win_match_id end
                as biggest_win_match_id
        from best_goals as g
        join best_assists as s on s.player_id = g.player_id
        left join best_margin as w on w.player_id = g.player_id
        left join stats.personal_bests as b
            on b.player_id = g.player_id and b.player_id = any (v_plan.fold_players)
        cross join lateral (
            select
                b.player_id is null or g.goals > b.most_goals as goals,
                b.player_id is null or s.assists > b.most_assists as assists,
                w.player_id is not null
                    and (b.biggest_win_margin is null or w.margin > b.biggest_win_margin)
                    as margin
        ) as better
    ),
    upserted as (
        insert into stats.personal_bests as t (
            player_id, tenant_id, most_goals, most_goals_match_id, most_assists,
            most_assists_match_id, biggest_win_margin, biggest_win_match_id
        )
        select
            c.player_id, p_tenant, c.most_goals, c.most_goals_match_id, c.most_assists,
            c.most_assists_match_id, c.biggest_win_margin, c.biggest_win_match_id
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            most_goals = excluded.most_goals,
            most_goals_match_id = excluded.most_goals_match_id,
            most_assists = excluded.most_assists,
            most_assists_match_id = excluded.most_assists_match_id,
            biggest_win_margin = excluded.biggest_win_margin,
            biggest_win_match_id = excluded.biggest_win_match_id
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.personal_bests as t
        where t.tenant_id = p_tenant
            and t.player_id = any (v_plan.recompute_players)
            and not exists (select from computed as c where c.player_id = t.player_id)
        returning 1
    )
    select
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'personal_bests', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    return v_written;
end
$$;

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
--
-- It also brings stats.applied_matches up to date for p_matches: the ten
-- tables of this message are committed, so the state they were computed from
-- is now the state the statistics hold.
create function stats.refresh_hall_of_fame(
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

    delete from stats.applied_matches as am
    where am.match_id = any (p_matches)
        and am.tenant_id = p_tenant
        and not exists (
            select from stats.counted_matches as m
            where m.match_id = am.match_id and m.tenant_id = am.tenant_id
        );

    insert into stats.applied_matches as am (match_id, tenant_id, season_id, played_at, player_ids)
    select
        m.match_id,
        m.tenant_id,
        m.season_id,
        m.played_at,
        array(
            select mp.player_id
            from public.match_players as mp
            where mp.match_id = m.match_id
            order by mp.player_id
        )
    from stats.counted_matches as m
    where m.match_id = any (p_matches)
        and m.tenant_id = p_tenant
    on conflict (match_id) do update set
        tenant_id = excluded.tenant_id,
        season_id = excluded.season_id,
        played_at = excluded.played_at,
        player_ids = excluded.player_ids
    where (am.*) is distinct from (excluded.*);

    return v_written;
end
$$;

-- 5. match_reports: the given matches; a counted match without lineup has a
-- report with no scorer and no MVP.
create function stats.refresh_match_reports(
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
    select (select count(*) from upserted) + (select count(*) from deleted) into v_written;
    return v_written;
end
$$;

-- 6. player_form: the last five results, most recent first. Fresh results go
-- in front of a folding player's; the points are read off the letters.
create function stats.refresh_player_form(
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
    v_plan record;
    v_written integer;
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
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'player_form', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    return v_written;
end
$$;

-- 7. player_streaks: runs of consecutive appearances.
--
-- The fresh appearances are numbered (i) and, for each kind, the qualifying
-- ones so far counted (q). Along a run of qualifying appearances both grow by
-- one, so i - q is constant within a run and differs between runs: runs are
-- the groups of (player, i - q). A folding player's current run goes on into
-- the fresh appearances' leading run (lead); the current run afterwards is the
-- fresh trailing run (tail), or the old one plus all fresh appearances when
-- every one qualifies.
create function stats.refresh_player_streaks(
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
    v_plan record;
    v_written integer;
    v_mark_players bigint[];
    v_mark_at timestamptz[];
    v_mark_id bigint[];
    v_mark_appearances int[];
    v_mark_goals int[];
begin
    perform pg_advisory_xact_lock(hashtext('stats.player_streaks'), hashtext(p_tenant::text));
    select *
    into v_plan
    from stats.plan_refresh(
        'player_streaks', p_tenant, stats.scope_players(p_tenant, p_matches, p_players), p_matches,
        p_rating_from_at, p_rating_from_id
    );

    with fresh as (
        select *
        from stats.fresh_appearances(
            'player_streaks', p_tenant, v_plan.recompute_players, v_plan.fold_players,
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
    numbered as (
        select
            f.player_id,
            f.result = 'W' as won,
            f.result <> 'L' as unbeaten,
            f.goals > 0 as scored,
            row_number() over so_far as i,
            count(*) filter (where f.result = 'W') over so_far as won_so_far,
            count(*) filter (where f.result <> 'L') over so_far as unbeaten_so_far,
            count(*) filter (where f.goals > 0) over so_far as scored_so_far
        from fresh as f
        window so_far as (
            partition by f.player_id
            order by f.played_at, f.match_id
            rows between unbounded preceding and current row
        )
    ),
    runs as (
        select n.player_id, 'win' as kind, count(*) as length
        from numbered as n where n.won
        group by n.player_id, n.i - n.won_so_far
        union all
        select n.player_id, 'unbeaten', count(*)
        from numbered as n where n.unbeaten
        group by n.player_id, n.i - n.unbeaten_so_far
        union all
        select n.player_id, 'scoring', count(*)
        from numbered as n where n.scored
        group by n.player_id, n.i - n.scored_so_far
    ),
    longest as (
        select
            r.player_id,
            max(r.length) filter (where r.kind = 'win') as win,
            max(r.length) filter (where r.kind = 'unbeaten') as unbeaten,
            max(r.length) filter (where r.kind = 'scoring') as scoring
        from runs as r
        group by r.player_id
    ),
    ends as (
        select
            n.player_id,
            count(*) as appearances,
            coalesce(min(n.i) filter (where not n.won) - 1, count(*)) as lead_win,
            count(*) - coalesce(max(n.i) filter (where not n.won), 0) as tail_win,
            coalesce(min(n.i) filter (where not n.unbeaten) - 1, count(*)) as lead_unbeaten,
            count(*) - coalesce(max(n.i) filter (where not n.unbeaten), 0) as tail_unbeaten,
            coalesce(min(n.i) filter (where not n.scored) - 1, count(*)) as lead_scoring,
            count(*) - coalesce(max(n.i) filter (where not n.scored), 0) as tail_scoring
        from numbered as n
        group by n.player_id
    ),
    computed as (
        select
            e.player_id,
            (case
                when e.lead_win = e.appearances then coalesce(b.current_win, 0) + e.appearances
                else e.tail_win
            end)::int as current_win,
            greatest(
                coalesce(b.longest_win, 0), coalesce(b.current_win, 0) + e.lead_win,
                coalesce(l.win, 0)
            )::int as longest_win,
            (case
                when e.lead_unbeaten = e.appearances
                    then coalesce(b.current_unbeaten, 0) + e.appearances
                else e.tail_unbeaten
            end)::int as current_unbeaten,
            greatest(
                coalesce(b.longest_unbeaten, 0),
                coalesce(b.current_unbeaten, 0) + e.lead_unbeaten,
                coalesce(l.unbeaten, 0)
            )::int as longest_unbeaten,
            (case
                when e.lead_scoring = e.appearances
                    then coalesce(b.current_scoring, 0) + e.appearances
                else e.tail_scoring
            end)::int as current_scoring,
            greatest(
                coalesce(b.longest_scoring, 0),
                coalesce(b.current_scoring, 0) + e.lead_scoring,
                coalesce(l.scoring, 0)
            )::int as longest_scoring
        from ends as e
        left join longest as l on l.player_id = e.player_id
        left join stats.player_streaks as b
            on b.player_id = e.player_id and b.player_id = any (v_plan.fold_players)
    ),
    upserted as (
        insert into stats.player_streaks as t (
            player_id, tenant_id, current_win, longest_win, current_unbeaten,
            longest_unbeaten, current_scoring, longest_scoring
        )
        select
            c.player_id, p_tenant, c.current_win, c.longest_win, c.current_unbeaten,
            c.longest_unbeaten, c.current_scoring, c.longest_scoring
        from computed as c
        on conflict (player_id) do update set
            tenant_id = excluded.tenant_id,
            current_win = excluded.current_win,
            longest_win = excluded.longest_win,
            current_unbeaten = excluded.current_unbeaten,
            longest_unbeaten = excluded.longest_unbeaten,
            current_scoring = excluded.current_scoring,
            longest_scoring = excluded.longest_scoring
        where (t.*) is distinct from (excluded.*)
        returning 1
    ),
    deleted as (
        delete from stats.player_streaks as t
        where t.tenant_id = p_tenant
            and t.player_id = any (v_plan.recompute_players)
            and not exists (select from computed as c where c.player_id = t.player_id)
        returning 1
    )
    select
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'player_streaks', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    return v_written;
end
$$;

-- 8. partnerships. Each pair belongs to its lower id: a scope player keeps the
-- pairs with team-mates of higher id. A pair changes only through a match both
-- played in, so its lower id is then in the scope; and folding the owner's
-- fresh appearances adds exactly the pair's fresh matches.
create function stats.refresh_partnerships(
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
    v_plan record;
    v_written integer;
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
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'partnerships', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    return v_written;
end
$$;

-- 9. season_leaderboards: top ten per season and category, values above 0.
create function stats.refresh_season_leaderboards(
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
    v_seasons bigint[];
    v_written integer;
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
    select (select count(*) from upserted) + (select count(*) from deleted) into v_written;
    return v_written;
end
$$;

-- 10. milestones: the appearance at which a running total first reached a
-- threshold. That appearance is the first one whose total is at least the
-- threshold while the total before it was below, so only crossing rows are
-- kept (a hat-trick from 9 to 12 crosses 10). A folding player's totals go on
-- from those of their mark.
create function stats.refresh_milestones(
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
    v_plan record;
    v_written integer;
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
        (select count(*) from upserted) + (select count(*) from deleted),
        array_agg(t.player_id),
        array_agg(t.last_at),
        array_agg(t.last_id),
        array_agg(t.appearances),
        array_agg(t.goals)
    into v_written, v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    from fresh_totals as t;

    perform stats.set_marks(
        'milestones', p_tenant, v_plan.recompute_players, v_plan.fold_players,
        v_plan.fold_to_at, v_plan.fold_to_id,
        v_mark_players, v_mark_at, v_mark_id, v_mark_appearances, v_mark_goals
    );
    return v_written;
end
$$;

-- 11. player_ratings: Elo, replayed from a position.
--
-- The history (stats.rating_steps) before the position stays; the tenant's
-- rated matches from there are replayed in order, starting from each player's
-- latest step before the position (1000 without one), and their steps replace
-- the history from the position on. A new match at the end replays just
-- itself. Ratings are float8 in memory and in the history, rounded only into
-- player_ratings.rating.
create function stats.refresh_player_ratings(
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
        loop
            select rs.played_at, rs.match_id
            into v_moved_at, v_moved_id
            from stats.counted_matches as m
            join stats.rating_steps as rs on rs.match_id = m.match_id
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

        for v_match in
            select
                m.match_id,
                m.played_at,
                case
                    when m.team_a_score > m.team_b_score then 1.0
                    when m.team_a_score = m.team_b_score then 0.5
                    else 0.0
                end::float8 as score_a,
                array_agg(u.idx::int order by u.player_id) filter (where mp.team = 'A')
                    as team_a,
                array_agg(u.idx::int order by u.player_id) filter (where mp.team = 'B')
                    as team_b
            from stats.counted_matches as m
            join public.match_players as mp on mp.match_id = m.match_id
            join unnest(v_pids) with ordinality as u (player_id, idx)
                on u.player_id = mp.player_id
            where m.tenant_id = p_tenant
                and (m.played_at, m.match_id) >= (v_from_at, v_from_id)
            group by m.match_id, m.played_at, m.team_a_score, m.team_b_score
            -- A match in which either team has no players is not rated.
            having bool_or(mp.team = 'A') and bool_or(mp.team = 'B')
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

-- All eleven in one transaction, in phase order (rebuilds, verification,
-- tests). The locks are taken in this fixed order and held to the end of the
-- transaction; a phase-one transaction of the worker holds only one of them.
create function stats.refresh_all(
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
