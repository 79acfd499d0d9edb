"""``migrate``: pgmq, the schema, the queue, the app's indexes and the first backfill.

``migrate`` runs the steps under one lock, in one transaction where it can:
``pgmq_install``, ``apply`` (migrations, the statistics' definitions, the queue),
then ``indexes`` outside it, then the backfill of ``worker.stats``;
``privileges`` turns a refusal into the GRANT that fixes it.
"""
