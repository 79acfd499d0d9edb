-- Transactional enqueue: a change to a match or its lineup sends one message per
-- affected match, in the transaction of the change, so that the message exists
-- exactly when the change was committed.
--
-- Message body (JSON), read by the worker:
--   tenant_id   uuid of the match's tenant (contract)
--   match_id    the match (contract)
--   player_ids  players whose statistics the change also touched although they
--               are no longer in the match's lineup: players removed from a
--               lineup, and the whole lineup of a deleted match (contract key)
--   season_ids  seasons the match counted in before the transaction and no
--               longer counts in: it moved to another season or stopped
--               counting (worker hint, for stats.message_scope p_extra_seasons)
--   since       the match's played_at before the transaction, ISO 8601 in UTC,
--               when it counted and then moved in time or stopped counting: the
--               statistics change from there on (worker hint, p_since)
-- The hint keys are present only when not empty. stats.message_scope also finds
-- this old state in stats.applied_matches and stats.rating_steps; the hints
-- keep it right when the match changed again before the worker got to it.
--
-- Mechanism: row and statement triggers collect what the transaction did to
-- each match in stats.pending_messages, keyed by (transaction, match, tenant).
-- The first insert of that key queues a deferred constraint trigger, which at
-- commit sends the accumulated row with pgmq.send and deletes it. Later changes
-- in the transaction only update the row, so a transaction that touches a match
-- and ten of its lineup rows sends one message. A rollback discards the row,
-- the queued trigger and the message together.
--
-- Nothing is sent for changes that cannot affect a statistic: a match that does
-- not count before or after the change (a scheduled match edited), or columns
-- the statistics do not read. TRUNCATE sends nothing, and like all ordinary
-- triggers these do not fire under session_replication_role = replica (e.g.
-- logical replication): such changes need stats.enqueue_match or a rebuild.
--
-- The trigger functions (and stats.enqueue_match) run as their owner, the role
-- that migrates: the app's own role writes matches and needs no rights on the
-- stats and pgmq schemas. Every name in them is schema-qualified, and their
-- search_path is pinned so that the caller's cannot redirect one.

create function stats.queue_name()
returns text
language plpgsql
stable
as $$
declare
    v_name text;
begin
    -- Written by migrate from the worker's settings.
    select c.value into v_name from stats_worker.config as c where c.key = 'queue_name';
    return coalesce(v_name, 'stats_updates');
end
$$;

-- Sends {"tenant_id": ..., "match_id": ...} by hand; returns the message id.
create function stats.enqueue_match(p_tenant uuid, p_match bigint)
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_msg_id bigint;
begin
    select s.msg_id
    into v_msg_id
    from pgmq.send(
        stats.queue_name(),
        jsonb_build_object('tenant_id', p_tenant, 'match_id', p_match)
    ) as s (msg_id);
    return v_msg_id;
end
$$;

-- The contract's definition, for the triggers' transition rows.
create function stats.is_counted(p_status text, p_team_a_score int, p_team_b_score int)
returns boolean
language sql
immutable
as $$
    select p_status = 'completed' and p_team_a_score is not null and p_team_b_score is not null
$$;

create function stats.array_union(p_left bigint[], p_right bigint[])
returns bigint[]
language sql
immutable
as $$
    select coalesce(array_agg(distinct x order by x), '{}')
    from unnest(p_left || p_right) as x
    where x is not null
$$;

create table stats.pending_messages (
    txid bigint not null,
    tenant_id uuid not null,
    match_id bigint not null,
    player_ids bigint[] not null default '{}',
    season_ids bigint[] not null default '{}',
    since timestamptz null,
    primary key (txid, match_id, tenant_id)
);

-- Merges one match's hints into the transaction's pending row.
create function stats.note_match(
    p_tenant uuid,
    p_match bigint,
    p_player_ids bigint[],
    p_season_ids bigint[],
    p_since timestamptz
)
returns void
language sql
as $$
    insert into stats.pending_messages as p (
        txid, tenant_id, match_id, player_ids, season_ids, since
    )
    values (
        txid_current(), p_tenant, p_match, stats.array_union(p_player_ids, '{}'),
        stats.array_union(p_season_ids, '{}'), p_since
    )
    on conflict (txid, match_id, tenant_id) do update set
        player_ids = stats.array_union(p.player_ids, excluded.player_ids),
        season_ids = stats.array_union(p.season_ids, excluded.season_ids),
        since = least(p.since, excluded.since)
$$;

-- Lineup rows changed: p_match_ids[i] changed, and p_removed[i] (when not null)
-- left its lineup. A match is noted when it counts now, or when this
-- transaction already noted it (it was cancelled or deleted first, so the
-- removed players' old contribution still needs a recompute).
create function stats.note_lineup_changes(p_match_ids bigint[], p_removed bigint[])
returns void
language sql
as $$
    with per_match as (
        select
            c.match_id,
            coalesce(
                array_agg(distinct c.removed order by c.removed)
                    filter (where c.removed is not null),
                '{}'
            ) as removed
        from unnest(p_match_ids, p_removed) as c (match_id, removed)
        group by c.match_id
    ),
    targets as (
        select m.tenant_id, pm.match_id, pm.removed
        from per_match as pm
        join public.matches as m on m.id = pm.match_id
        where stats.is_counted(m.status, m.team_a_score, m.team_b_score)
        union
        select p.tenant_id, pm.match_id, pm.removed
        from per_match as pm
        join stats.pending_messages as p
            on p.txid = txid_current() and p.match_id = pm.match_id
    )
    insert into stats.pending_messages as p (txid, tenant_id, match_id, player_ids)
    select txid_current(), t.tenant_id, t.match_id, t.removed
    from targets as t
    on conflict (txid, match_id, tenant_id) do update set
        player_ids = stats.array_union(p.player_ids, excluded.player_ids)
$$;

-- At commit: send the transaction's accumulated row for one match.
create function stats.send_pending_message()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_note stats.pending_messages;
begin
    delete from stats.pending_messages as p
    where p.txid = new.txid and p.match_id = new.match_id and p.tenant_id = new.tenant_id
    returning p.* into v_note;
    if not found then
        return null;
    end if;
    perform pgmq.send(
        stats.queue_name(),
        jsonb_build_object('tenant_id', v_note.tenant_id, 'match_id', v_note.match_id)
        || case
            when cardinality(v_note.player_ids) > 0
                then jsonb_build_object('player_ids', to_jsonb(v_note.player_ids))
            else '{}'::jsonb
        end
        || case
            when cardinality(v_note.season_ids) > 0
                then jsonb_build_object('season_ids', to_jsonb(v_note.season_ids))
            else '{}'::jsonb
        end
        || case
            when v_note.since is not null
                then jsonb_build_object(
                    'since',
                    to_char(v_note.since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                )
            else '{}'::jsonb
        end
    );
    return null;
end
$$;

create constraint trigger send_at_commit
    after insert on stats.pending_messages
    deferrable initially deferred
    for each row execute function stats.send_pending_message();

-- matches, INSERT: a match that counts from the start.
create function stats.matches_inserted()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into stats.pending_messages (txid, tenant_id, match_id)
    select txid_current(), n.tenant_id, n.id
    from new_rows as n
    where stats.is_counted(n.status, n.team_a_score, n.team_b_score)
    on conflict (txid, match_id, tenant_id) do nothing;
    return null;
end
$$;

-- matches, UPDATE. Old and new rows are paired by id; a row whose id changed
-- is a match that disappeared plus one that appeared.
create function stats.matches_updated()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    with pairs as (
        select
            o.id as old_id,
            o.tenant_id as old_tenant,
            o.season_id as old_season,
            o.played_at as old_played_at,
            coalesce(stats.is_counted(o.status, o.team_a_score, o.team_b_score), false)
                as old_counted,
            n.id as new_id,
            n.tenant_id as new_tenant,
            n.season_id as new_season,
            n.played_at as new_played_at,
            coalesce(stats.is_counted(n.status, n.team_a_score, n.team_b_score), false)
                as new_counted,
            (o.tenant_id, o.season_id, o.played_at, o.status, o.team_a_score, o.team_b_score)
                is distinct from
                (n.tenant_id, n.season_id, n.played_at, n.status, n.team_a_score,
                    n.team_b_score)
                as changed,
            o.id is not null and n.id is not null and o.tenant_id = n.tenant_id
                as same_match
        from old_rows as o
        full join new_rows as n on n.id = o.id
    ),
    notes as (
        -- Counts after the change: a new or corrected contribution.
        select
            p.new_tenant as tenant_id,
            p.new_id as match_id,
            '{}'::bigint[] as player_ids,
            case
                when p.same_match and p.old_counted and p.old_season is not null
                    and p.old_season is distinct from p.new_season
                    then array[p.old_season]
                else '{}'
            end as season_ids,
            case
                when p.same_match and p.old_counted and p.old_played_at <> p.new_played_at
                    then p.old_played_at
            end as since
        from pairs as p
        where p.new_counted and p.changed
        union all
        -- Counted before, not any more for this tenant and id: cancelled,
        -- un-completed or scores cleared (the lineup is still there), or the id
        -- or tenant changed (the lineup is named, it no longer leads here).
        select
            p.old_tenant,
            p.old_id,
            case
                when p.same_match then '{}'::bigint[]
                else array(
                    select mp.player_id
                    from public.match_players as mp
                    where mp.match_id = p.old_id
                )
            end,
            case when p.old_season is not null then array[p.old_season] else '{}' end,
            p.old_played_at
        from pairs as p
        where p.old_counted
            and not (p.same_match and p.new_counted)
    )
    insert into stats.pending_messages as pm (
        txid, tenant_id, match_id, player_ids, season_ids, since
    )
    select
        txid_current(), n.tenant_id, n.match_id, stats.array_union(n.player_ids, '{}'),
        n.season_ids, n.since
    from notes as n
    on conflict (txid, match_id, tenant_id) do update set
        player_ids = stats.array_union(pm.player_ids, excluded.player_ids),
        season_ids = stats.array_union(pm.season_ids, excluded.season_ids),
        since = least(pm.since, excluded.since);
    return null;
end
$$;

-- matches, DELETE. A row trigger BEFORE the delete, because the lineup is still
-- there to be named; the cascade then deletes it, and those deletions find this
-- transaction's row and merge into it.
create function stats.match_deleting()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if stats.is_counted(old.status, old.team_a_score, old.team_b_score) then
        perform stats.note_match(
            old.tenant_id,
            old.id,
            array(select mp.player_id from public.match_players as mp where mp.match_id = old.id),
            case when old.season_id is not null then array[old.season_id] else '{}' end,
            old.played_at
        );
    end if;
    return old;
end
$$;

-- match_players, INSERT: new lineup rows.
create function stats.lineup_inserted()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform stats.note_lineup_changes(
        coalesce((select array_agg(n.match_id) from new_rows as n), '{}'),
        coalesce((select array_agg(null::bigint) from new_rows as n), '{}')
    );
    return null;
end
$$;

-- match_players, UPDATE. Rows are paired by key; a row whose key changed left
-- one lineup (its player is named) and joined another.
create function stats.lineup_updated()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_match_ids bigint[];
    v_removed bigint[];
begin
    select
        coalesce(array_agg(coalesce(n.match_id, o.match_id)), '{}'),
        coalesce(array_agg(case when n.match_id is null then o.player_id end), '{}')
    into v_match_ids, v_removed
    from old_rows as o
    full join new_rows as n on n.match_id = o.match_id and n.player_id = o.player_id
    where o.match_id is null
        or n.match_id is null
        or (o.team, o.goals, o.assists, o.own_goals, o.is_mvp)
            is distinct from (n.team, n.goals, n.assists, n.own_goals, n.is_mvp);
    perform stats.note_lineup_changes(v_match_ids, v_removed);
    return null;
end
$$;

-- match_players, DELETE: players removed from a lineup (or its whole match).
create function stats.lineup_deleted()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform stats.note_lineup_changes(
        coalesce((select array_agg(o.match_id) from old_rows as o), '{}'),
        coalesce((select array_agg(o.player_id) from old_rows as o), '{}')
    );
    return null;
end
$$;

-- Statement triggers see all rows of a statement at once, so a bulk import is
-- a few set operations rather than one function call per row.
create trigger stats_enqueue_inserted
    after insert on public.matches
    referencing new table as new_rows
    for each statement execute function stats.matches_inserted();

create trigger stats_enqueue_updated
    after update on public.matches
    referencing old table as old_rows new table as new_rows
    for each statement execute function stats.matches_updated();

create trigger stats_enqueue_deleting
    before delete on public.matches
    for each row execute function stats.match_deleting();

create trigger stats_enqueue_inserted
    after insert on public.match_players
    referencing new table as new_rows
    for each statement execute function stats.lineup_inserted();

create trigger stats_enqueue_updated
    after update on public.match_players
    referencing old table as old_rows new table as new_rows
    for each statement execute function stats.lineup_updated();

create trigger stats_enqueue_deleted
    after delete on public.match_players
    referencing old table as old_rows
    for each statement execute function stats.lineup_deleted();
