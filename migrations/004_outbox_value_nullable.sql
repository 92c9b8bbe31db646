-- A dead-letter copy of a record without a value (a Kafka tombstone) is a
-- record without a value too: the relay publishes a NULL value as null.
-- (Dropping NOT NULL only changes the catalog: no rewrite, no long lock.)
ALTER TABLE outbox ALTER COLUMN value DROP NOT NULL;
