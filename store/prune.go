package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
	// The oldest rows first, by the age index: statement_timestamp(),
	// unlike clock_timestamp(), can bound an index scan, and = ANY of an
	// array keeps the outer delete on the primary key. The outcome of an
	// acquire still queued is kept (a wait may outlast the retention): a
	// copy of it would otherwise be applied again. The queue has no index
	// on request_id: EXCEPT reads it once, where a per-row test could read
	// it once per row; as many more of the oldest are taken as there are
	// waits, so those kept never fill the batch.
	requests, err := s.pruneAlone(ctx, func(ctx context.Context, tx pgx.Tx) (int64, error) {
		tag, err := tx.Exec(ctx, `DELETE FROM processed_requests WHERE request_id = ANY (ARRAY(
			SELECT request_id FROM (
				(SELECT request_id FROM processed_requests WHERE processed_at < statement_timestamp() - make_interval(secs => $1::float8)
				ORDER BY processed_at LIMIT $2 + (SELECT count(*) FROM lock_waiters))
				EXCEPT SELECT request_id FROM lock_waiters) due
			LIMIT $2))`, requestRetention.Seconds(), limit)
		return tag.RowsAffected(), err
	})
	if err != nil {
		return 0, fmt.Errorf("pruning request outcomes: %w", err)
	}
	floor := time.UnixMicro(s.eventsFloor.Load())
	var newest *time.Time
	events, err := s.pruneAlone(ctx, func(ctx context.Context, tx pgx.Tx) (int64, error) {
		var n int64
		err := tx.QueryRow(ctx, pruneEventsSQL, eventsRetention.Seconds(), limit, floor).Scan(&n, &newest)
		return n, err
	})
	if err != nil {
		return requests, fmt.Errorf("pruning history: %w", err)
	}
	if newest != nil {
		s.eventsFloor.Store(newest.Add(-s.eventsSlack()).UnixMicro())
	}
	return requests + events, nil
}

// pruneEventsSQL deletes at most $2 history rows older than $1 seconds,
// from the floor $3 on, and returns how many and the newest of them. The
// walk of lock_events_occurred starts at the floor, not at the index's
// first entry: the entries of the rows deleted stay until a VACUUM (the
// vacuum loop leaves this table to autovacuum), at the left of the index,
// where no insert comes to clear them, and a walk from the first entry
// read every one deleted since the last VACUUM, on every call, even one
// that found nothing due.
const pruneEventsSQL = `WITH d AS (DELETE FROM lock_events WHERE id = ANY (ARRAY(
		SELECT id FROM lock_events WHERE occurred_at >= $3 AND occurred_at < statement_timestamp() - make_interval(secs => $1::float8)
		ORDER BY occurred_at LIMIT $2)) RETURNING occurred_at)
	SELECT count(*), max(occurred_at) FROM d`

// eventsSlack is how far the floor of Prune's history walk trails the
// newest row it deleted: a row's occurred_at is read in its transaction,
// which commits up to an attempt's bound later (Config.AttemptTimeout),
// so rows older than the newest deleted may still come. A minute more for
// the commit's way back; with no bound, the minute alone: a row that
// commits later still is kept until the replica restarts, never lost.
func (s *Store) eventsSlack() time.Duration {
	return max(s.cfg.AttemptTimeout, 0) + time.Minute
}

// pruneAlone runs one of Prune's statements (stmt) in a transaction of its
// own that holds the prune lock, tried: 0 rows when another replica holds
// it.
func (s *Store) pruneAlone(ctx context.Context, stmt func(context.Context, pgx.Tx) (int64, error)) (int64, error) {
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
	n, err := stmt(bctx, tx)
	if err == nil {
		err = tx.Commit(bctx)
	}
	if err != nil {
		return 0, done(err)
	}
	return n, nil
}
