package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// StateTopic is the lock state topic as a worker found it at its start
// (table state_topics, migration 016).
type StateTopic struct {
	// ID is its Kafka topic ID ("" before Kafka 2.8).
	ID         string
	Partitions int
}

// RecordedStateTopic returns what was last recorded of topic, and whether
// anything was.
func (s *Store) RecordedStateTopic(ctx context.Context, topic string) (StateTopic, bool, error) {
	var t StateTopic
	err := s.Pool.QueryRow(ctx, `SELECT topic_id, partitions FROM state_topics WHERE topic = $1`, topic).Scan(&t.ID, &t.Partitions)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return StateTopic{}, false, nil
	case err != nil:
		return StateTopic{}, false, fmt.Errorf("reading what was recorded of the lock state topic %s: %w", topic, translate(err))
	}
	return t, true, nil
}

// RecordStateTopic records t as what topic is now.
func (s *Store) RecordStateTopic(ctx context.Context, topic string, t StateTopic) error {
	_, err := s.Pool.Exec(ctx, `INSERT INTO state_topics (topic, topic_id, partitions) VALUES ($1, $2, $3)
		ON CONFLICT (topic) DO UPDATE SET topic_id = excluded.topic_id, partitions = excluded.partitions`, topic, t.ID, t.Partitions)
	if err != nil {
		return fmt.Errorf("recording the lock state topic %s: %w", topic, translate(err))
	}
	return nil
}
