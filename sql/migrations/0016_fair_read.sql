-- Fairness between tenants on one queue (worker/queue/consumer.py): a read that
-- passes over the messages of groups the worker already holds a full
-- recompute of, so one tenant's backlog at the head of the queue cannot keep
-- every other tenant's messages unread behind it.
--
-- With nothing to pass over it is pgmq's own read. Otherwise no pgmq version
-- can express "not these groups" (its conditional read is containment only),
-- so the read is made on the queue table as pgmq makes it: the same
-- SKIP LOCKED claim, visibility timeout and read_ct, and last_read_at where
-- the installed pgmq has that column. Nothing here changes pgmq itself.
--
-- p_field names the top-level body field that holds a group's key and
-- p_full the keys (lower case) to pass over. A body that is not an object, or
-- lacks the field, or spells the key some other way is read as usual: the
-- pass-over is a bound on what one group holds, never a filter that could
-- leave a message unread for good.
create or replace function stats_worker.read_passing_over(
    p_queue text, p_vt integer, p_qty integer, p_field text, p_full text[]
)
returns table (msg_id bigint, read_ct integer, enqueued_at timestamptz, vt timestamptz, message jsonb)
language plpgsql
as $$
declare
    v_table text := 'q_' || p_queue;
    v_last_read text := '';
begin
    if p_field is null or coalesce(cardinality(p_full), 0) = 0 then
        return query
            select r.msg_id, r.read_ct, r.enqueued_at, r.vt, r.message
            from pgmq.read(p_queue, p_vt, p_qty) as r;
        return;
    end if;
    if exists (
        select 1 from pg_attribute
        where attrelid = to_regclass(format('pgmq.%I', v_table))
          and attname = 'last_read_at' and not attisdropped
    ) then
        v_last_read := ', last_read_at = clock_timestamp()';
    end if;
    return query execute format(
        $sql$
        with claimed as (
            select q.msg_id
            from pgmq.%1$I as q
            where q.vt <= clock_timestamp()
              and not coalesce(lower(q.message ->> $2) = any ($3), false)
            order by q.msg_id
            limit $1
            for update skip locked
        )
        update pgmq.%1$I as m
        set vt = clock_timestamp() + $4, read_ct = m.read_ct + 1 %2$s
        from claimed
        where m.msg_id = claimed.msg_id
        returning m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message
        $sql$,
        v_table, v_last_read
    ) using p_qty, p_field, p_full, make_interval(secs => p_vt);
end
$$;
