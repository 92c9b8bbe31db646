-- Each life of a session has a generation of its own (docs/design.md
-- "Sessions"): a session_id may be opened again once its session ended,
-- and a command sent in an earlier life but applied only after the new
-- open (its partition lagged, or replays after an outage) would otherwise
-- act on the new life: an acquire granted into a session that never asked
-- for it, held for as long as that session lives; a close ending it. The
-- session.opened of each life carries the generation, and the commands of
-- that life may name it (session_generation): the worker refuses one that
-- names another.
--
-- Drawn from a sequence of its own, so a generation is never given twice
-- (barring a database that lost committed transactions, whose sequence
-- went back: docs/design.md "PostgreSQL lost transactions"). The volatile
-- default rewrites the table, which holds only the open sessions; every
-- row there gets a generation, and so does every row a binary from before
-- this migration inserts without naming the column.
CREATE SEQUENCE session_generations AS bigint NO CYCLE;
ALTER TABLE sessions ADD COLUMN generation bigint NOT NULL DEFAULT nextval('session_generations');
ALTER SEQUENCE session_generations OWNED BY sessions.generation;

-- Unchanged: binaries from 019 on run beside it as they ran before it.
-- They neither read nor write the column (their inserts get its default),
-- and ignore a command's session_generation, as an older worker ignores
-- every command field added after it (docs/design.md "Commands",
-- Compatibility: workers are upgraded before the programs that send one):
-- such a command is applied to whatever life of its session_id is live,
-- as every command was before. Nothing they write breaks what a newer
-- binary reads: a session they open has a generation, which their
-- session.opened does not tell, so no command names it.
UPDATE lockworker_schema_compat SET oldest_reader = 19;
