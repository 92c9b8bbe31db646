-- Autovacuum settings fit for the hot tables' churn. The defaults wait for
-- 20 % of a table to be dead (plus 50 rows) and then vacuum slowly: a table
-- of 64 live locks updated 1,000 times a second piles up dead row versions
-- far faster than that, and its statements slow down as it bloats (README
-- "Table bloat"). Here a table is vacuumed after a fixed number of dead rows,
-- whatever its size, and without the cost delay: these tables are small, so
-- an unthrottled vacuum takes milliseconds. processed_requests is large (a
-- day of request outcomes) and only loses rows to the periodic prune: it
-- keeps a (smaller) scale factor and a throttled vacuum.
-- Storage parameters only change the catalog: no rewrite, no long lock.
-- They matter only where autovacuum runs; where it does not, the worker's
-- own vacuum loop (VACUUM_ENABLED) keeps these tables small.

ALTER TABLE locks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE lock_waiters SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

-- A queue: every row is inserted once and deleted once it is published.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

-- One row per partition, updated by every batch.
ALTER TABLE consumer_offsets SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE processed_requests SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.02
);
