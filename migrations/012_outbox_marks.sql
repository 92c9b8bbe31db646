-- Marks of outbox rows written for a commands partition by a transaction of
-- another replica (a cleanup or a session's end touching a lock of that
-- partition; docs/design.md "Relay"). The owner's relay publishes the rows
-- its own transactions hand it without reading the table; a transaction of
-- the owner that finds a mark for a partition it writes to has the relay
-- read the table first, so a lock's records keep the order of the commits.
-- The relay deletes a partition's marks when it reads the table.
CREATE TABLE outbox_marks (
    source_partition integer     NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_marks_partition ON outbox_marks (source_partition);
