-- Tenant affinity across replicas (worker/queue/affinity.py): one session advisory
-- lock per (queue, tenant), named by $1's texts, held by the replica whose
-- recompute of that tenant is waiting or running.

-- name: claim_tenants
-- Takes, in $1's order and without waiting, locks that nobody holds until $2
-- are taken; returns the names taken. A lock another replica holds is simply
-- not returned. The scan stops at the limit, so the names after it are never
-- tried (the worker releases any extra all the same).
SELECT coalesce(array_agg(name), '{}')
FROM (
    SELECT name
    FROM unnest($1::text[]) AS name
    WHERE pg_try_advisory_lock(hashtextextended(name, 0))
    LIMIT $2
) AS taken

-- name: release_tenants
SELECT count(*) FILTER (WHERE pg_advisory_unlock(hashtextextended(name, 0)))
FROM unnest($1::text[]) AS name
