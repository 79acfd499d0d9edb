-- Tenant affinity across replicas (worker/affinity.py): one session advisory
-- lock per (queue, tenant), named by $1's texts, held by the replica whose
-- recompute of that tenant is waiting or running.

-- name: claim_tenants
-- Takes each lock that nobody holds, without waiting; returns the names taken.
-- A lock another replica holds is simply not returned.
SELECT coalesce(array_agg(name), '{}')
FROM unnest($1::text[]) AS name
WHERE pg_try_advisory_lock(hashtextextended(name, 0))

-- name: release_tenants
SELECT count(*) FILTER (WHERE pg_advisory_unlock(hashtextextended(name, 0)))
FROM unnest($1::text[]) AS name
