-- Each statistic keeps its own record of what it applied, written in the same
-- transaction as the statistic and read from the same snapshot (see
-- stats.record_applied in sql/stats/scope.sql). Until now one table,
-- stats.applied_matches, described all ten and was rewritten by the hall of
-- fame step, in a later transaction: a change that landed between the two (a
-- cancel, a lineup edit while another replica held the next step back) left
-- the record describing the new state while a statistic still held the old
-- one, and nothing could find the players that only the old state had.
--
-- The statistics' functions themselves now live in sql/stats/, one file per
-- statistic, applied by migrate as repeatable definitions after the numbered
-- migrations (stats_worker.stat_definitions, which migrate creates, records
-- each file's checksum).

-- How one counted match looked to a statistic when it applied the match.
create type stats.applied_match as (
    match_id bigint,
    season_id bigint,
    played_at timestamptz,
    player_ids bigint[]
);

create table stats.applied_by_stat (
    match_id bigint not null,
    tenant_id uuid not null,
    stat text not null,
    season_id bigint null,
    played_at timestamptz not null,
    player_ids bigint[] not null,
    primary key (match_id, tenant_id, stat)
);
create index applied_by_stat_tenant_id_idx on stats.applied_by_stat (tenant_id);

-- What the shared record said holds for each of the nine that keep one (the
-- Elo history, stats.rating_steps, is player_ratings' own record, and the hall
-- of fame reads the other tables, not the matches).
insert into stats.applied_by_stat (match_id, tenant_id, stat, season_id, played_at, player_ids)
select am.match_id, am.tenant_id, s.stat, am.season_id, am.played_at, am.player_ids
from stats.applied_matches as am
cross join unnest(array[
    'player_totals', 'season_standings', 'personal_bests', 'match_reports', 'player_form',
    'player_streaks', 'partnerships', 'season_leaderboards', 'milestones'
]) as s (stat);

drop table stats.applied_matches;
