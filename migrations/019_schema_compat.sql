-- The oldest schema version whose binaries may keep running on this schema
-- (store.Migrate, store.CompatTable). A binary built with migrations up to
-- N (19 or later) that finds the schema migrated past N starts, with a
-- warning, when oldest_reader <= N, and refuses to start otherwise: so an
-- older replica restarted during a rolling upgrade, or a rollback, keeps
-- running over migrations that older binaries run beside. Binaries before
-- 019 do not read it: they refuse any newer schema.
--
-- Every migration from 020 on sets it (UPDATE lockworker_schema_compat SET
-- oldest_reader = K), in its own transaction, K never above its own
-- number: the value before it when the binaries that value allows run
-- beside the new schema as beside the old (a table, an index or a nullable
-- column added); higher when they do not (a column they write changing
-- type, one they do not know becoming NOT NULL without a default, a table
-- they read rewritten; a column that carries a rule older binaries would
-- ignore, as 010's lock_delay and max_hold, even where they could write
-- beside it). Never lower than the value before it.
CREATE TABLE lockworker_schema_compat (
    oldest_reader integer NOT NULL
);
CREATE UNIQUE INDEX lockworker_schema_compat_one_row ON lockworker_schema_compat ((true));
INSERT INTO lockworker_schema_compat (oldest_reader) VALUES (19);
