-- The worker meets pgmq as people have it: the 1.4.x extension Supabase enables,
-- newer 1.5.x images, or the SQL-only 1.13 of the `pgmq` package. Their
-- functions differ (set_vt over an array or to a timestamp exists only in 1.13;
-- send to a timestamp from 1.5; metrics().queue_visible_length from 1.5), so the
-- few calls whose best form differs go through these functions. Each asks the
-- catalog which signatures exist, at call time, and takes pgmq's own function
-- where the installed version has it. Nothing here changes pgmq itself.
--
-- PL/pgSQL plans a statement when it first runs it, so a branch that names a
-- function this pgmq lacks is harmless as long as it is not taken.

create or replace function stats_worker.pgmq_has(p_signature text)
returns boolean
language sql
stable
as $$
    select to_regprocedure(p_signature) is not null
$$;

-- Keeps messages invisible for another p_seconds (the renewal of running work).
create or replace function stats_worker.extend_visibility(
    p_queue text, p_msg_ids bigint[], p_seconds integer
)
returns bigint
language plpgsql
as $$
declare
    v_count bigint;
begin
    if stats_worker.pgmq_has('pgmq.set_vt(text,bigint[],integer)') then
        select count(*) into v_count from pgmq.set_vt(p_queue, p_msg_ids, p_seconds);
    else
        select count(*) into v_count
        from unnest(p_msg_ids) as m (msg_id), lateral pgmq.set_vt(p_queue, m.msg_id, p_seconds);
    end if;
    return v_count;
end
$$;

-- Makes each message visible again after its own delay (retries, releases).
-- Where pgmq has no set_vt to a timestamp (1.4, 1.5) its integer form would
-- round a backoff to whole seconds, so the same update is made on the queue
-- table directly: every version waits exactly as long.
create or replace function stats_worker.retry_after(
    p_queue text, p_msg_ids bigint[], p_delays double precision[]
)
returns bigint
language plpgsql
as $$
declare
    v_count bigint;
begin
    if stats_worker.pgmq_has('pgmq.set_vt(text,bigint,timestamp with time zone)') then
        select count(*) into v_count
        from unnest(p_msg_ids, p_delays) as d (msg_id, delay_s),
             lateral pgmq.set_vt(p_queue, d.msg_id,
                                 clock_timestamp() + make_interval(secs => d.delay_s));
    else
        execute format(
            'update pgmq.%I as q set vt = clock_timestamp() + make_interval(secs => d.delay_s) '
            'from unnest($1::bigint[], $2::double precision[]) as d (msg_id, delay_s) '
            'where q.msg_id = d.msg_id',
            'q_' || p_queue
        ) using p_msg_ids, p_delays;
        get diagnostics v_count = row_count;
    end if;
    return v_count;
end
$$;

-- Sends one message, visible at p_run_at (now when null).
create or replace function stats_worker.send(p_queue text, p_body jsonb, p_run_at timestamptz)
returns bigint
language plpgsql
as $$
declare
    v_msg_id bigint;
begin
    if p_run_at is null then
        select s into v_msg_id from pgmq.send(p_queue, p_body) as s;
    elsif stats_worker.pgmq_has('pgmq.send(text,jsonb,timestamp with time zone)') then
        select s into v_msg_id from pgmq.send(p_queue, p_body, p_run_at) as s;
    else
        select s into v_msg_id
        from pgmq.send(
            p_queue, p_body,
            ceil(greatest(extract(epoch from p_run_at - clock_timestamp()), 0))::integer
        ) as s;
    end if;
    return v_msg_id;
end
$$;

-- Queue depth for /health and /metrics: pgmq's metrics, plus the visible count
-- that 1.4 does not report (counted from the queue table there).
create or replace function stats_worker.queue_depth(p_queue text)
returns table (length bigint, visible bigint, oldest_age_seconds integer, total_sent bigint)
language plpgsql
stable
as $$
declare
    v_metrics pgmq.metrics_result;
    v_visible bigint;
begin
    v_metrics := pgmq.metrics(p_queue);
    if exists (
        select 1
        from pg_type as t
        join pg_attribute as a on a.attrelid = t.typrelid
        where t.oid = to_regtype('pgmq.metrics_result')
          and a.attname = 'queue_visible_length' and not a.attisdropped
    ) then
        v_visible := (to_jsonb(v_metrics) ->> 'queue_visible_length')::bigint;
    else
        execute format(
            'select count(*) from pgmq.%I where vt <= clock_timestamp()', 'q_' || p_queue
        ) into v_visible;
    end if;
    return query select v_metrics.queue_length, v_visible,
                        v_metrics.oldest_msg_age_sec, v_metrics.total_messages;
end
$$;

-- The worker's own wake-up: one NOTIFY per inserting statement on the queue
-- table, whoever sends (pgmq's clients, pgmq.send from SQL, the app's
-- triggers). A statement trigger takes no row lock and PostgreSQL folds equal
-- notifications of one transaction into one, so enqueuing transactions never
-- wait on each other (pgmq 1.13's enable_notify_insert updates one shared row
-- per message instead).
create or replace function stats_worker.notify_insert()
returns trigger
language plpgsql
as $$
begin
    perform pg_notify(tg_argv[0], '');
    return null;
end
$$;

create or replace function stats_worker.notify_channel(p_queue text)
returns text
language sql
immutable
as $$
    select 'stats_worker_' || p_queue
$$;

-- Installs that trigger on the queue's table (idempotent) and turns off pgmq's
-- per-message notify for the queue where this pgmq has it.
create or replace function stats_worker.install_queue_notify(p_queue text)
returns void
language plpgsql
as $$
begin
    if to_regclass('pgmq.notify_insert_throttle') is not null then
        if exists (select 1 from pgmq.notify_insert_throttle as t where t.queue_name = p_queue) then
            perform pgmq.disable_notify_insert(p_queue);
        end if;
    end if;
    if not exists (
        select 1 from pg_trigger
        where tgrelid = format('pgmq.%I', 'q_' || p_queue)::regclass
          and tgname = 'stats_worker_notify_insert'
    ) then
        execute format(
            'create trigger stats_worker_notify_insert after insert on pgmq.%I '
            'for each statement execute function stats_worker.notify_insert(%L)',
            'q_' || p_queue, stats_worker.notify_channel(p_queue)
        );
    end if;
end
$$;
