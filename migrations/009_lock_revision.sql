-- Per-lock revisions (docs/design.md "Lock state topic"): every change of a
-- lock adds one, and its events and its record on the lock state topic
-- carry it. Locks that exist at the upgrade start at 0 and count on from
-- their next change, which publishes their first state record.
ALTER TABLE locks ADD COLUMN revision bigint NOT NULL DEFAULT 0;
