-- The lock state topic as a worker last found it at its start: its Kafka
-- topic ID ('' before Kafka 2.8) and partition count (docs/design.md "Lock
-- state topic"). A worker that finds another (partitions added, or the
-- topic deleted and created again) publishes the state of every lock
-- again, so that each lock's partition under the new count holds its
-- current state, then records what it found.
CREATE TABLE state_topics (
    topic      text PRIMARY KEY,
    topic_id   text NOT NULL,
    partitions int  NOT NULL
);
