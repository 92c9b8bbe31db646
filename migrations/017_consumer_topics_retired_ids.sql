-- The Kafka topic IDs a commands topic had before its current one, the
-- latest first, at most 16 (docs/design.md "Exactly-once effect"). A broker
-- that has not caught up with a topic's deletion yet still answers the old
-- ID for a while; taken for a new recreation, it would make a replica forget
-- the live topic's offsets and the outcomes of its generated request_ids.
-- An ID found here is refused instead (store.ErrRetiredTopicID) and read
-- again. Topic IDs are random UUIDs, and only recent ones can still be read
-- from a lagging broker: a few are kept.
ALTER TABLE consumer_topics ADD COLUMN retired_ids text[] NOT NULL DEFAULT '{}';
