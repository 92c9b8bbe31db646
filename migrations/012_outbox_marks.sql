-- Marks of outbox rows written for a commands partition by a transaction of
-- another replica (a cleanup or a session's end touching a lock of that
-- partition; docs/design.md "The outbox and the relay"). The owner's relay
-- publishes the rows its own transactions hand it without reading the
-- table; a transaction of the owner that finds a mark for a partition it
-- writes to has the relay read the table first, so a lock's records keep
-- the order of the commits. The relay deletes a partition's mark when it
-- reads the table.
--
-- One row per partition, upserted: the table never holds more rows than
-- there are partitions, so any plan reads it cheaply, and a writer that
-- finds the mark already there still updates (locks) it, so the relay's
-- delete waits for that writer's commit and the read after it sees its
-- rows.
CREATE TABLE outbox_marks (
    source_partition integer     PRIMARY KEY,
    marked_at        timestamptz NOT NULL DEFAULT now()
);
