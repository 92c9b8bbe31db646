package store

import (
	"context"
	"fmt"
	"time"
)

// Prune deletes request outcomes older than requestRetention and history older
// than eventsRetention, at most limit rows of each per call, so one call never
// holds locks for long. It returns how many rows it deleted.
func (s *Store) Prune(ctx context.Context, requestRetention, eventsRetention time.Duration, limit int) (int64, error) {
	var total int64
	for _, q := range []struct {
		sql string
		age time.Duration
	}{
		{`DELETE FROM processed_requests WHERE request_id IN (
			SELECT request_id FROM processed_requests WHERE processed_at < clock_timestamp() - make_interval(secs => $1::float8) LIMIT $2)`, requestRetention},
		{`DELETE FROM lock_events WHERE id IN (
			SELECT id FROM lock_events WHERE occurred_at < clock_timestamp() - make_interval(secs => $1::float8) LIMIT $2)`, eventsRetention},
	} {
		tag, err := s.Pool.Exec(ctx, q.sql, q.age.Seconds(), limit)
		if err != nil {
			return total, fmt.Errorf("pruning: %w", translate(err))
		}
		total += tag.RowsAffected()
	}
	return total, nil
}
