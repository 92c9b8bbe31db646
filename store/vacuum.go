package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// HotTables are the tables every command rewrites: their dead row versions
// pile up fastest, and their statements slow down as they bloat (README
// "Table bloat"). Migration 007 gives them their autovacuum settings (008
// to lock_holders, 011 to sessions, rewritten by every keep-alive).
var HotTables = []string{"locks", "lock_holders", "lock_waiters", "outbox", "consumer_offsets", "processed_requests", "sessions"}

// TableStats is what PostgreSQL's statistics say of one table of the
// worker's schema (pg_stat_user_tables).
type TableStats struct {
	Table    string `json:"table"`
	LiveRows int64  `json:"live_rows"`
	DeadRows int64  `json:"dead_rows"`
	// StatsRows is the rows the planner's statistics count (pg_class
	// reltuples, set by the last VACUUM or ANALYZE); -1 when the table was
	// never vacuumed or analyzed.
	StatsRows int64 `json:"stats_rows"`
	// LastVacuum and LastAutovacuum are nil when the table was never
	// vacuumed that way.
	LastVacuum     *time.Time `json:"last_vacuum"`
	LastAutovacuum *time.Time `json:"last_autovacuum"`
}

// VacuumSettings are the server settings autovacuum depends on.
type VacuumSettings struct {
	// Autovacuum is the autovacuum setting; autovacuum runs only when
	// TrackCounts is on too.
	Autovacuum bool `json:"autovacuum"`
	// TrackCounts off leaves n_dead_tup at zero: dead rows cannot be counted.
	TrackCounts bool `json:"track_counts"`
}

// Runs reports whether autovacuum vacuums anything at all.
func (s VacuumSettings) Runs() bool { return s.Autovacuum && s.TrackCounts }

// ReadVacuumSettings reads autovacuum and track_counts. They can change
// with a configuration reload, so callers read them again now and then.
func (s *Store) ReadVacuumSettings(ctx context.Context) (VacuumSettings, error) {
	ctx, done, cancel := s.bounded(ctx)
	defer cancel()
	var v VacuumSettings
	err := s.Pool.QueryRow(ctx, `SELECT current_setting('autovacuum')::bool, current_setting('track_counts')::bool`).
		Scan(&v.Autovacuum, &v.TrackCounts)
	if err != nil {
		return VacuumSettings{}, fmt.Errorf("reading the autovacuum settings: %w", done(err))
	}
	return v, nil
}

// ReadTableStats returns the statistics of the hot tables of the worker's
// schema (the first schema of its search_path), in HotTables' order. The
// counts lag the writes by up to a second (backends report them in batches).
func (s *Store) ReadTableStats(ctx context.Context) ([]TableStats, error) {
	ctx, done, cancel := s.bounded(ctx)
	defer cancel()
	rows, err := s.Pool.Query(ctx, `
		SELECT s.relname::text, s.n_live_tup, s.n_dead_tup, c.reltuples::bigint, s.last_vacuum, s.last_autovacuum
		FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
		WHERE s.schemaname = current_schema() AND s.relname = ANY ($1::text[])
		ORDER BY array_position($1::text[], s.relname::text)`, HotTables)
	if err != nil {
		return nil, fmt.Errorf("reading table statistics: %w", done(err))
	}
	stats, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TableStats, error) {
		var t TableStats
		err := r.Scan(&t.Table, &t.LiveRows, &t.DeadRows, &t.StatsRows, &t.LastVacuum, &t.LastAutovacuum)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading table statistics: %w", done(err))
	}
	return stats, nil
}

// VacuumLockClass is the first key of the advisory lock Vacuum holds while
// it vacuums (pg_locks: locktype advisory, classid VacuumLockClass); the
// second is hashtext of the schema, so workers of different schemas in one
// database do not wait for each other.
const VacuumLockClass = 0x4c57_5643 // "LWVC"

// Vacuum runs VACUUM on tables of the worker's schema, unless another
// worker on the same schema is vacuuming: then it does nothing and returns
// false. Only one replica vacuums at a time, since two VACUUMs of a table
// would only queue behind each other. SKIP_LOCKED passes over a table that
// another VACUUM (autovacuum's, or an operator's) holds, instead of waiting.
//
// VACUUM cannot run inside a transaction, so it runs on a plain connection
// of the pool, and table names cannot be parameters, so they are quoted.
//
// Each step is bounded, so that a connection that stops answering holds
// neither the caller nor a pool slot until TCP gives up: taking the
// connection and the lock, and releasing it, as a transaction's attempt is
// (Config.AttemptTimeout); the VACUUM by the most an attempt may grow to
// (64 times that, 16 minutes by default). The server keeps the lock of a
// session whose client vanished until it notices (up to
// Config.ClientGoneTimeout after the VACUUM ends, over TCP); other
// replicas skip their passes meanwhile.
func (s *Store) Vacuum(ctx context.Context, tables []string) (bool, error) {
	if len(tables) == 0 {
		return true, nil
	}
	lctx, done, cancel := s.bounded(ctx)
	defer cancel()
	c, err := s.Pool.Acquire(lctx)
	if err != nil {
		return false, fmt.Errorf("vacuuming: %w", done(err))
	}
	defer c.Release()
	var got bool
	if err := c.QueryRow(lctx, `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`, VacuumLockClass).Scan(&got); err != nil {
		return false, fmt.Errorf("vacuuming: taking the vacuum lock: %w", done(err))
	}
	if !got {
		return false, nil
	}
	quoted := make([]string, len(tables))
	for i, t := range tables {
		quoted[i] = pgx.Identifier{t}.Sanitize()
	}
	// The VACUUM may take long on bloated tables: the most a transaction's
	// attempt may grow to.
	vctx, done, vcancel := s.boundedBy(ctx, s.cfg.AttemptTimeout*maxAttemptGrowth)
	defer vcancel()
	_, err = c.Exec(vctx, "VACUUM (SKIP_LOCKED) "+strings.Join(quoted, ", "))
	if err == nil {
		var ucancel context.CancelFunc
		lctx, done, ucancel = s.bounded(ctx)
		defer ucancel()
		_, err = c.Exec(lctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, VacuumLockClass)
	}
	if err != nil {
		// Closing the session is the sure way to release the lock, whatever
		// state a cancelled VACUUM left the connection in.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer ccancel()
		_ = c.Hijack().Close(cctx)
		return true, fmt.Errorf("vacuuming %s: %w", strings.Join(tables, ", "), done(err))
	}
	return true, nil
}
