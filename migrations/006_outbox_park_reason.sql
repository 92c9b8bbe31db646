-- Why a row is parked: the Kafka error (or UNREADABLE_HEADERS) that parked
-- it, for the runbook and the lockworker_outbox_rows_parked_total metric. A
-- row Kafka refuses for good (too large, invalid) is parked until
-- 'infinity' at once, so it never holds back the rows after it; a topic that
-- cannot be written parks its rows until a finite time, as before.
ALTER TABLE outbox ADD COLUMN park_reason text;

-- Parked rows, for /health (a count on every probe) and for each relay's
-- start (which topics of its partition are parked). Few rows: the index
-- stays small whatever the backlog. (Built inside the migration's
-- transaction, without CONCURRENTLY: the outbox is normally near empty.)
CREATE INDEX outbox_parked ON outbox (source_partition, topic, parked_until) WHERE parked_until IS NOT NULL;
