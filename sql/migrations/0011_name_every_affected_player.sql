-- One rule for the statistics' bookkeeping to lean on: a change that can take
-- a contribution out of the statistics names every player who may have had
-- one. The worker's own record of what it applied (stats.applied_matches) is
-- written by a later step than the tables it describes; a change that lands
-- between the two (a cancel, a lineup edit) would otherwise leave players that
-- only that record could find. With these two triggers the message itself
-- carries them.
--
-- 0005 already names the lineup when a match is deleted or moves to another
-- tenant, and a player who leaves the lineup of a counted match. The one gap: a
-- match that counted and stops counting (cancelled, un-completed, scores
-- cleared) named nobody, and a lineup edit after that sends nothing (the match
-- does not count). Now it names its whole lineup as it is when it stops
-- counting, so a later edit has nothing left to hide. It only adds to the
-- transaction's pending row (stats.note_match merges).

create function stats.matches_stopped_counting()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform stats.note_match(
        o.tenant_id,
        o.id,
        array(select mp.player_id from public.match_players as mp where mp.match_id = o.id),
        '{}',
        null
    )
    from old_rows as o
    join new_rows as n on n.id = o.id and n.tenant_id = o.tenant_id
    where stats.is_counted(o.status, o.team_a_score, o.team_b_score)
        and not coalesce(stats.is_counted(n.status, n.team_a_score, n.team_b_score), false);
    return null;
end
$$;

create trigger stats_enqueue_stopped_counting
    after update on public.matches
    referencing old table as old_rows new table as new_rows
    for each statement execute function stats.matches_stopped_counting();

