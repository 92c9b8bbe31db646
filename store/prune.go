package store

import (
	"context"
	"fmt"
	"time"
)

// Prune deletes request outcomes older than requestRetention (but those of
// acquires still queued) and history older than eventsRetention, at most
// limit rows of each per call, so one call never holds locks for long. It
// returns how many rows it deleted. Each statement is bounded as a
// transaction's attempt is (Config.AttemptTimeout).
func (s *Store) Prune(ctx context.Context, requestRetention, eventsRetention time.Duration, limit int) (int64, error) {
	var total int64
	for _, q := range []struct {
		sql string
		age time.Duration
	}{
		// The oldest rows first, by the age index: statement_timestamp(),
		// unlike clock_timestamp(), can bound an index scan, and = ANY of
		// an array keeps the outer delete on the primary key. The outcome
		// of an acquire still queued is kept (a wait may outlast the
		// retention): a copy of it would otherwise be applied again. The
		// queue has no index on request_id: EXCEPT reads it once, where a
		// per-row test could read it once per row; as many more of the
		// oldest are taken as there are waits, so those kept never fill
		// the batch.
		{`DELETE FROM processed_requests WHERE request_id = ANY (ARRAY(
			SELECT request_id FROM (
				(SELECT request_id FROM processed_requests WHERE processed_at < statement_timestamp() - make_interval(secs => $1::float8)
				ORDER BY processed_at LIMIT $2 + (SELECT count(*) FROM lock_waiters))
				EXCEPT SELECT request_id FROM lock_waiters) due
			LIMIT $2))`, requestRetention},
		{`DELETE FROM lock_events WHERE id = ANY (ARRAY(
			SELECT id FROM lock_events WHERE occurred_at < statement_timestamp() - make_interval(secs => $1::float8)
			ORDER BY occurred_at LIMIT $2))`, eventsRetention},
	} {
		bctx, done, cancel := s.bounded(ctx)
		tag, err := s.Pool.Exec(bctx, q.sql, q.age.Seconds(), limit)
		cancel()
		if err != nil {
			return total, fmt.Errorf("pruning: %w", done(err))
		}
		total += tag.RowsAffected()
	}
	return total, nil
}
