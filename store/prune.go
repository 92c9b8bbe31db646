package store

import (
	"context"
	"fmt"
	"time"
)

// PruneLockClass is the first key of the advisory lock a statement of
// Prune holds (pg_locks: locktype advisory, classid PruneLockClass); the
// second is hashtext of the schema, as VacuumLockClass's.
const PruneLockClass = 0x4c57_5052 // "LWPR"

// Prune deletes request outcomes older than requestRetention (but those of
// acquires still queued) and history older than eventsRetention, at most
// limit rows of each per call, so one call never holds locks for long. It
// returns how many rows it deleted. Each statement is bounded as a
// transaction's attempt is (Config.AttemptTimeout), and runs only where no
// other replica's is running (the advisory lock PruneLockClass, tried, not
// waited for): every replica prunes the same tables, and two would delete
// the same oldest rows, the second waiting for the first's.
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
		n, err := s.pruneAlone(ctx, q.sql, q.age, limit)
		if err != nil {
			return total, fmt.Errorf("pruning: %w", err)
		}
		total += n
	}
	return total, nil
}

// pruneAlone runs one of Prune's statements in a transaction of its own
// that holds the prune lock, tried: 0 rows when another replica holds it.
func (s *Store) pruneAlone(ctx context.Context, sql string, age time.Duration, limit int) (int64, error) {
	bctx, done, cancel := s.bounded(ctx)
	defer cancel()
	tx, err := s.Pool.Begin(bctx)
	if err != nil {
		return 0, done(err)
	}
	defer rollback(ctx, tx) // bounded: a connection gone half-open must not hold the cleanup loop
	var got bool
	if err := tx.QueryRow(bctx, `SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))`, PruneLockClass).Scan(&got); err != nil {
		return 0, done(err)
	}
	if !got {
		return 0, nil
	}
	tag, err := tx.Exec(bctx, sql, age.Seconds(), limit)
	if err == nil {
		err = tx.Commit(bctx)
	}
	if err != nil {
		return 0, done(err)
	}
	return tag.RowsAffected(), nil
}
