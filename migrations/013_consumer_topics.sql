-- The Kafka topic ID of each commands topic whose offsets consumer_offsets
-- keeps (docs/design.md "Exactly-once effect"). A topic deleted and created
-- again under its name (an embedded broker's data directory removed, a
-- topic recreated by an operator) numbers its records from 0 again: the
-- stored offsets of the old topic would skip the new one's first records
-- as applied. A worker that finds another ID forgets the topic's offsets.
CREATE TABLE consumer_topics (
    group_id text NOT NULL,
    topic    text NOT NULL,
    topic_id text NOT NULL,
    PRIMARY KEY (group_id, topic)
);
