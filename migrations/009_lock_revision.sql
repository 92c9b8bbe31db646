-- Per-lock revisions (docs/design.md "Lock state topic"): every change of a
-- lock adds one, and its events and its record on the lock state topic
-- carry it. Locks that exist at the upgrade start at 0: the worker gives
-- them revision 1 at start and publishes their state
-- (worker.PublishFirstStates).
ALTER TABLE locks ADD COLUMN revision bigint NOT NULL DEFAULT 0;
