-- The relay's read walks only the rows not parked (docs/design.md "The
-- outbox and the relay"). It walked outbox_partition, every row of the
-- partition, so each read went through the whole backlog of a parked topic
-- before the first row it could return: 72 ms at 100,000 parked rows, up to
-- 0.8 s at a million, and more with every park that topic had. A parked row
-- leaves outbox_waiting; when its park ends, the relay takes the mark off
-- (parked_until back to NULL), a chunk per read, its topic left out until
-- none is left, and the row is walked again in its place.
--
-- outbox_waiting replaces outbox_partition, so an insert updates one index
-- as before. Built inside the migration's transaction, without
-- CONCURRENTLY: writes to the outbox (every command) wait while it builds
-- (the outbox normally holds only the rows of the moment).
CREATE INDEX outbox_waiting ON outbox (source_partition, id) WHERE parked_until IS NULL;
DROP INDEX outbox_partition;
