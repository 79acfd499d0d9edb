-- name: migrate_lock
-- One migrate at a time across every replica that starts together.
SELECT pg_advisory_lock(hashtext('stats_worker.migrate'))

-- name: migrate_unlock
SELECT pg_advisory_unlock(hashtext('stats_worker.migrate'))

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

-- name: queue_exists
SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1)

-- name: create_queue
SELECT pgmq.create($1)

-- name: notify_insert_enabled
SELECT EXISTS (SELECT 1 FROM pgmq.notify_insert_throttle WHERE queue_name = $1)

-- name: enable_notify_insert
-- No throttle: a worker waiting on the queue should hear every first insert.
SELECT pgmq.enable_notify_insert($1, 0)

-- name: set_config
INSERT INTO stats_worker.config (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
