-- The periodic cleanup deletes a partition's idle ended rows: with the
-- partition first in the index it reads only that partition's rows due,
-- instead of every ended row of every partition on each pass. (Built
-- without CONCURRENTLY, inside the migration's transaction: writes to locks
-- wait while it builds, once, at the first start of this version.)
CREATE INDEX locks_ended_idle_by_partition ON locks (source_partition, updated_at) WHERE status IN ('released', 'expired');
DROP INDEX locks_ended_idle;
