"""``migrate``: pgmq, the schema, the queue, the app's indexes and the first backfill."""
