-- Retention (worker/retention.py) deletes failed invalidations by age, a few
-- hundred at a time: this index finds them without reading the pending ones.
CREATE INDEX IF NOT EXISTS callbacks_failed_created
    ON stats_worker.callbacks (created_at) WHERE status = 'failed';
