-- The eleven statistics tables of the contract (schema stats) and the helper
-- tables the refresh functions keep beside them.
--
-- Names, types and primary keys of the eleven are binding (the app's pages read
-- them). Player and season ids are globally unique in the source tables, so the
-- contract's keys need no tenant_id; each table still carries it so that a
-- tenant's rows can be found (and rebuilt) through an index.
--
-- Statistic tables have no foreign keys to the source tables on purpose: the app
-- may delete a match (or its last player) before the worker has caught up.

create schema if not exists stats;

-- 1. Career totals over a player's appearances.
create table stats.player_totals (
    player_id bigint primary key,
    tenant_id uuid not null,
    appearances int not null,
    wins int not null,
    draws int not null,
    losses int not null,
    goals int not null,
    assists int not null,
    own_goals int not null,
    clean_sheets int not null,
    mvps int not null,
    points int not null
);
create index player_totals_tenant_id_idx on stats.player_totals (tenant_id);

-- 2. Per-season table; position covers the whole season.
create table stats.season_standings (
    season_id bigint not null,
    player_id bigint not null,
    tenant_id uuid not null,
    played int not null,
    wins int not null,
    draws int not null,
    losses int not null,
    goals int not null,
    assists int not null,
    points int not null,
    position int not null,
    primary key (season_id, player_id)
);
create index season_standings_tenant_id_idx on stats.season_standings (tenant_id);

-- 3. Best single appearances.
create table stats.personal_bests (
    player_id bigint primary key,
    tenant_id uuid not null,
    most_goals int not null,
    most_goals_match_id bigint not null,
    most_assists int not null,
    most_assists_match_id bigint not null,
    biggest_win_margin int null,
    biggest_win_match_id bigint null,
    -- Both null when the player never won.
    check ((biggest_win_margin is null) = (biggest_win_match_id is null))
);
create index personal_bests_tenant_id_idx on stats.personal_bests (tenant_id);

-- 4. Tenant-wide records.
create table stats.hall_of_fame (
    tenant_id uuid not null,
    record text not null check (record in (
        'most_appearances', 'most_goals', 'most_assists', 'most_wins',
        'most_mvps', 'longest_win_streak', 'most_goals_in_match'
    )),
    player_id bigint not null,
    value int not null,
    match_id bigint null,
    primary key (tenant_id, record)
);

-- 5. One row per counted match.
create table stats.match_reports (
    match_id bigint primary key,
    tenant_id uuid not null,
    result text not null check (result in ('A', 'B', 'draw')),
    team_a_score int not null,
    team_b_score int not null,
    top_scorer_id bigint null,
    mvp_id bigint null,
    report jsonb not null
);
create index match_reports_tenant_id_idx on stats.match_reports (tenant_id);

-- 6. Results of the last five appearances.
create table stats.player_form (
    player_id bigint primary key,
    tenant_id uuid not null,
    last5 text not null,
    form_points int not null
);
create index player_form_tenant_id_idx on stats.player_form (tenant_id);

-- 7. Runs of consecutive appearances.
create table stats.player_streaks (
    player_id bigint primary key,
    tenant_id uuid not null,
    current_win int not null,
    longest_win int not null,
    current_unbeaten int not null,
    longest_unbeaten int not null,
    current_scoring int not null,
    longest_scoring int not null
);
create index player_streaks_tenant_id_idx on stats.player_streaks (tenant_id);

-- 8. Pairs of team-mates, each pair once (player_id < partner_id).
create table stats.partnerships (
    player_id bigint not null,
    partner_id bigint not null,
    tenant_id uuid not null,
    matches_together int not null,
    wins_together int not null,
    primary key (player_id, partner_id),
    check (player_id < partner_id)
);
-- A player's pairs are found by either column.
create index partnerships_partner_id_idx on stats.partnerships (partner_id);
create index partnerships_tenant_id_idx on stats.partnerships (tenant_id);

-- 9. Top ten per season and category.
create table stats.season_leaderboards (
    season_id bigint not null,
    category text not null check (category in ('goals', 'assists', 'mvps', 'clean_sheets')),
    position int not null check (position between 1 and 10),
    tenant_id uuid not null,
    player_id bigint not null,
    value int not null,
    primary key (season_id, category, position)
);
create index season_leaderboards_tenant_id_idx on stats.season_leaderboards (tenant_id);

-- 10. The appearance at which a running total first reached a threshold.
create table stats.milestones (
    player_id bigint not null,
    kind text not null check (kind in ('appearances', 'goals')),
    threshold int not null check (threshold in (10, 25, 50, 100, 250, 500)),
    tenant_id uuid not null,
    match_id bigint not null,
    primary key (player_id, kind, threshold)
);
create index milestones_tenant_id_idx on stats.milestones (tenant_id);

-- 11. Elo ratings.
create table stats.player_ratings (
    player_id bigint primary key,
    tenant_id uuid not null,
    rating numeric(8, 2) not null,
    rated_matches int not null
);
create index player_ratings_tenant_id_idx on stats.player_ratings (tenant_id);

-- Elo is order-dependent, so the ratings keep their history: one row per rated
-- appearance with the rating after it, in full precision. A new match at the
-- end replays only itself (starting from each player's latest step); a
-- correction deletes the steps from its position on and replays from there.
create table stats.rating_steps (
    match_id bigint not null,
    player_id bigint not null,
    tenant_id uuid not null,
    played_at timestamptz not null,
    rating_after float8 not null,
    -- The player's rated matches up to and including this one, so that
    -- player_ratings.rated_matches needs no count over the history.
    rated_count int not null,
    -- The replay that last wrote the step (stats.rating_replays).
    replay bigint not null,
    primary key (match_id, player_id)
)
-- A replay rewrites the rating columns of every step after its position; free
-- room on each page lets those updates stay on the page (heap-only, no index
-- entries to add).
with (fillfactor = 50);

create sequence stats.rating_replays;

-- A player's rating before a position: the latest step before it.
create index rating_steps_player_idx
    on stats.rating_steps (tenant_id, player_id, played_at, match_id);
-- Deleting the steps at and after a position.
create index rating_steps_position_idx
    on stats.rating_steps (tenant_id, played_at, match_id);

-- Where each player-keyed statistic of a player stands, so that a match added
-- at the end of a player's history is folded into their row instead of
-- recomputing the whole history (which grows without bound).
--
-- The rows of statistic `stat` for a player cover exactly the player's
-- appearances at or before the position (through_at, through_id);
-- appearances and goals are the player's running totals there (milestones go
-- on from them). A refresh whose earliest changed position lies after the
-- mark adds the appearances after it; any other recomputes the player from
-- all appearances and sets the mark again. A mark may lie later than the
-- rows' last appearance, never earlier.
create table stats.player_marks (
    stat text not null,
    player_id bigint not null,
    tenant_id uuid not null,
    through_at timestamptz not null,
    through_id bigint not null,
    appearances int not null,
    goals int not null,
    primary key (stat, player_id)
);

-- How each counted match looked when its statistics were last applied. A
-- message names only a match; when the match has since moved to another season
-- or date, lost players, or stopped counting or existing, its current row no
-- longer says which season and players still hold its old contribution. This
-- table does (stats.message_scope reads it). stats.refresh_hall_of_fame, which
-- runs after the other ten statistics of a message have committed, brings it
-- up to date, so a message that fails half-way is retried with the old state
-- still known.
create table stats.applied_matches (
    match_id bigint primary key,
    tenant_id uuid not null,
    season_id bigint null,
    played_at timestamptz not null,
    player_ids bigint[] not null
);
create index applied_matches_tenant_id_idx on stats.applied_matches (tenant_id);
