-- The relay's read walks only the rows it may publish (docs/design.md "The
-- outbox and the relay"). It walked outbox_partition, every row of the
-- partition, so the whole backlog of a parked topic, or of one backing off,
-- came before the first row it could return: each read cost more as the
-- outage went on, and once the read of several partitions took longer than
-- the relay's query bound, the other topics' rows stopped too.
--
-- outbox_ready replaces outbox_partition: the rows neither parked nor set
-- aside. Every insert updates it, as it did outbox_partition. A read sets
-- aside (set_aside) the rows of a topic it leaves out (parked, backing off)
-- that it walked past. They still wait, and a later read takes them through
-- outbox_aside, by topic in id order, once their topic may go. That index
-- also holds the parked rows; only parking and setting aside update it.
-- Rows parked for good ('infinity') are in neither index: no read of the
-- relay takes them (outbox_parked still finds them).
--
-- Built inside the migration's transaction, without CONCURRENTLY: the
-- outbox is normally near empty. The column is added without a rewrite,
-- but takes ACCESS EXCLUSIVE on the outbox for the whole migration:
-- commands, which write the outbox, and the relays wait until it commits.
ALTER TABLE outbox ADD COLUMN set_aside boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_ready ON outbox (source_partition, id) WHERE parked_until IS NULL AND NOT set_aside;
CREATE INDEX outbox_aside ON outbox (source_partition, topic, id)
    WHERE parked_until < 'infinity' OR parked_until IS NULL AND set_aside;
DROP INDEX outbox_partition;
