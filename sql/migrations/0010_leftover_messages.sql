-- A pending trigger message is never left unsent. The deferred constraint
-- trigger sends each transaction's row at commit, but not in a session that
-- commits under session_replication_role = replica (ordinary and constraint
-- triggers do not fire there). Rows of transactions still running are
-- invisible to everyone else, and a commit that sent its row deleted it, so
-- every row another session can see is one that nobody will send: the worker
-- sweeps them (stats.send_leftover_messages) at start and every half minute.

-- The message body of a pending row, one definition for the trigger and the sweep.
create function stats.pending_body(p_note stats.pending_messages)
returns jsonb
language sql
stable
as $$
    select
    jsonb_build_object('tenant_id', p_note.tenant_id, 'match_id', p_note.match_id)
    || case
        when cardinality(p_note.player_ids) > 0
            then jsonb_build_object('player_ids', to_jsonb(p_note.player_ids))
        else '{}'::jsonb
    end
    || case
        when cardinality(p_note.season_ids) > 0
            then jsonb_build_object('season_ids', to_jsonb(p_note.season_ids))
        else '{}'::jsonb
    end
    || case
        when p_note.since is not null
            then jsonb_build_object(
                'since',
                to_char(p_note.since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            )
        else '{}'::jsonb
    end
$$;

create or replace function stats.send_pending_message()
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
    if found then
        perform pgmq.send(stats.queue_name(), stats.pending_body(v_note));
    end if;
    return null;
end
$$;

create function stats.send_leftover_messages(p_limit integer default 100)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_note stats.pending_messages;
    v_sent integer := 0;
begin
    for v_note in
        delete from stats.pending_messages as p
        where (p.txid, p.match_id, p.tenant_id) in (
            select l.txid, l.match_id, l.tenant_id
            from stats.pending_messages as l
            limit p_limit
            for update skip locked
        )
        returning p.*
    loop
        perform pgmq.send(stats.queue_name(), stats.pending_body(v_note));
        v_sent := v_sent + 1;
    end loop;
    return v_sent;
end
$$;
