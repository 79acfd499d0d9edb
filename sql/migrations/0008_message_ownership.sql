-- Settling only what the worker still owns, and attempts that count failures.
--
-- A worker owns a message from its read until another read hands it out again:
-- pgmq counts every read in read_ct, so "the read_ct I got is still the
-- message's read_ct" is the ownership test. Acks, retries, dead letters and
-- renewals lock the rows that pass it (FOR UPDATE, in msg_id order, so two
-- settlers never deadlock; pgmq's read skips locked rows) and act on those only.
-- A worker whose timeout lapsed and whose message another worker took settles
-- nothing of it: the other worker's run is the one that counts.

-- Failures recorded for a message, its attempts: releases at shutdown and
-- lapsed timeouts raise read_ct but are not failures.
alter table stats_worker.job_runs add column failures integer not null default 0;

create function stats_worker.lock_owned(p_queue text, p_msg_ids bigint[], p_read_cts integer[])
returns bigint[]
language plpgsql
as $$
declare
    v_owned bigint[];
begin
    execute format(
        'select coalesce(array_agg(o.msg_id order by o.msg_id), ''{}'') '
        'from (select q.msg_id from pgmq.%I as q '
        '      join unnest($1::bigint[], $2::integer[]) as u (msg_id, read_ct) '
        '        on q.msg_id = u.msg_id and q.read_ct = u.read_ct '
        '      order by q.msg_id for update of q) as o',
        'q_' || p_queue
    ) into v_owned using p_msg_ids, p_read_cts;
    return v_owned;
end
$$;

-- Renewal of the messages still owned; returns them (the others were lost).
create function stats_worker.extend_owned(
    p_queue text, p_msg_ids bigint[], p_read_cts integer[], p_seconds integer
)
returns bigint[]
language plpgsql
as $$
declare
    v_owned bigint[] := stats_worker.lock_owned(p_queue, p_msg_ids, p_read_cts);
begin
    if cardinality(v_owned) > 0 then
        perform stats_worker.extend_visibility(p_queue, v_owned, p_seconds);
    end if;
    return v_owned;
end
$$;
