"""The statistics job: what a stats message means and how it is recomputed.

``message`` parses a body, ``handler`` merges a tenant's messages and computes
their scope, ``aggregations`` runs the statistics' SQL functions. ``maintenance``
(rebuild, verify) and ``backfill`` recompute from scratch; ``league`` makes the
synthetic leagues of the demo, the benchmark and the tests. Nothing here knows
the queue: the consumer reaches this package through ``worker.core.handlers``.
"""
