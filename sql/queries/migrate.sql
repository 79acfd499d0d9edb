-- name: migrate_xact_lock
-- One migrate at a time across every replica that starts together. Held to the
-- end of migrate's transaction: through a transaction pooler a session lock
-- would stay behind on a server connection other clients then get.
SELECT pg_advisory_xact_lock(hashtext('stats_worker.migrate'))

-- name: current_role
SELECT current_user::text

-- name: pgmq_installed_version
-- The pgmq in this database, if any: an extension's version, or 'sql' for the
-- SQL-only install (which has the schema and functions but no extension row).
SELECT coalesce(
    (SELECT extversion FROM pg_extension WHERE extname = 'pgmq'),
    (SELECT 'sql' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'pgmq' AND p.proname = 'read' LIMIT 1)
)

-- name: pgmq_extension_available
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq')

-- name: create_pgmq_extension
CREATE EXTENSION IF NOT EXISTS pgmq

-- name: create_migrations_table
CREATE SCHEMA IF NOT EXISTS stats_worker;
CREATE TABLE IF NOT EXISTS stats_worker.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM stats_worker.schema_migrations

-- name: record_migration
INSERT INTO stats_worker.schema_migrations (version, name) VALUES ($1, $2)

-- name: create_stat_definitions_table
CREATE TABLE IF NOT EXISTS stats_worker.stat_definitions (
    name       text PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: stat_definition_checksums
-- The checksum of each file of sql/stats as last applied.
SELECT name, checksum FROM stats_worker.stat_definitions

-- name: record_stat_definition
INSERT INTO stats_worker.stat_definitions (name, checksum) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()

-- name: queue_exists
SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1)

-- name: create_queue
SELECT pgmq.create($1)

-- name: install_queue_notify
-- The worker's own statement-level NOTIFY on the queue table (0006_pgmq_adapter.sql).
SELECT stats_worker.install_queue_notify($1)

-- name: role_exists
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)

-- name: grant_stats_read
-- STATS_READ_ROLES: read access to the contract's eleven tables (0007).
SELECT stats_worker.grant_stats_read($1)

-- name: missing_app_indexes
-- The indexes the statistics need on the app's tables that are not there yet:
-- neither under our name nor as an equivalent valid index (a plain btree whose
-- leading columns are these). 'invalid' is an interrupted build under our name,
-- or one still under way: 'building' says some session builds an index of that
-- table right now (early in a build its index is not named in the progress view).
WITH wanted (name, tbl, cols) AS (
    VALUES
        ('match_players_player_id_idx', 'public.match_players', ARRAY['player_id']),
        ('matches_tenant_played_at_id_idx', 'public.matches', ARRAY['tenant_id', 'played_at', 'id']),
        ('matches_season_id_idx', 'public.matches', ARRAY['season_id']),
        -- a season's matches of one tenant, whatever the tenant's history (the
        -- season statistics' generic plans; season_id alone serves the foreign key)
        ('matches_tenant_season_id_idx', 'public.matches', ARRAY['tenant_id', 'season_id']),
        ('seasons_tenant_id_idx', 'public.seasons', ARRAY['tenant_id']),
        ('players_tenant_id_idx', 'public.players', ARRAY['tenant_id'])
),
candidates AS (
    SELECT w.name, w.tbl, w.cols, to_regclass(w.tbl) AS table_oid,
           to_regclass('public.' || quote_ident(w.name)) AS index_oid
    FROM wanted AS w
    WHERE to_regclass(w.tbl) IS NOT NULL
)
SELECT c.name,
       i.indisvalid IS FALSE AS invalid,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index AS p
               WHERE p.relid = c.table_oid) AS building,
       format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s (%s)', c.name, c.tbl,
              (SELECT string_agg(quote_ident(col), ', ') FROM unnest(c.cols) AS col)) AS create_sql,
       format('DROP INDEX CONCURRENTLY IF EXISTS public.%I', c.name) AS drop_sql
FROM candidates AS c
LEFT JOIN pg_index AS i ON i.indexrelid = c.index_oid
WHERE (c.index_oid IS NULL OR i.indisvalid IS FALSE)
  AND NOT EXISTS (
      SELECT 1
      FROM pg_index AS e
      JOIN pg_class AS ic ON ic.oid = e.indexrelid
      JOIN pg_am AS am ON am.oid = ic.relam
      WHERE e.indrelid = c.table_oid AND e.indisvalid AND e.indpred IS NULL
        AND e.indexprs IS NULL AND am.amname = 'btree'
        AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
             FROM unnest(e.indkey::int2[]) WITH ORDINALITY AS k (attnum, ord)
             JOIN pg_attribute AS a ON a.attrelid = e.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= cardinality(c.cols)) = c.cols
  )

-- name: config_exists
SELECT to_regclass('stats_worker.config') IS NOT NULL

-- name: configured_queue
-- The queue the app's triggers send to.
SELECT value FROM stats_worker.config WHERE key = 'queue_name'

-- name: set_config
INSERT INTO stats_worker.config (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
