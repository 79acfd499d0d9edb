-- The season statistics look their rows up by tenant and season: the delete of
-- rows a season no longer has (stats.refresh_season_standings and
-- stats.refresh_season_leaderboards) filters on both. With an index on
-- tenant_id alone, the cached generic plan read every season row of the
-- tenant to keep one season's: 12,000 rows (1.4 ms) for a tenant of 20,000
-- matches and 60 players, a cost that grew with the tenant's history. Led by
-- the tenant, these serve both that and anything that wanted tenant_id alone.
create index if not exists season_standings_tenant_season_idx
    on stats.season_standings (tenant_id, season_id);
drop index if exists stats.season_standings_tenant_id_idx;

create index if not exists season_leaderboards_tenant_season_idx
    on stats.season_leaderboards (tenant_id, season_id);
drop index if exists stats.season_leaderboards_tenant_id_idx;
