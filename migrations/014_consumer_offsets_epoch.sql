-- The Kafka leader epoch of the last record applied from each partition
-- (docs/design.md "Exactly-once effect"). A replica resumes a partition at
-- its stored offset with this epoch, so the Kafka client can ask the broker
-- whether the log still holds what was applied (KIP-320): a broker that lost
-- records (an unclean leader election, an embedded broker's unsynced tail)
-- numbers new records from an offset already applied, and without the check
-- they would be skipped as applied. -1: not known (stored before this).
--
-- leader_epoch_offset is the next_offset the epoch was stored with: the
-- epoch is only read beside that offset, so one left behind by a worker of
-- an earlier version, which moves next_offset alone, is never taken for the
-- epoch of a later record.
ALTER TABLE consumer_offsets
    ADD COLUMN leader_epoch integer NOT NULL DEFAULT -1,
    ADD COLUMN leader_epoch_offset bigint NOT NULL DEFAULT -1;
