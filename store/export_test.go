package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// RunTimeTransient reports whether err, of a call at run time (a
// transaction), is ErrTransient.
func RunTimeTransient(err error) bool { return classify(err, transient) == ErrTransient }

// StartRetryable reports whether err, of Open or Migrate with ctx, is
// retried under Config.RetryStart.
func StartRetryable(ctx context.Context, err error) bool {
	return classify(err, func(err error) bool { return ctx.Err() == nil && startRetryable(err) }) == ErrTransient
}

// SessionSettings is the pool's AfterConnect for a connection string that
// sets none of the settings, its SET bounded by bound.
func SessionSettings(idle, bound time.Duration) func(context.Context, *pgx.Conn) error {
	return sessionSettings(Config{IdleInTransactionTimeout: idle, LockTimeout: DefaultLockTimeout}, nil, bound)
}

// ProbeConn is Probe's connection: nil before the first Probe.
func (s *Store) ProbeConn() *pgx.Conn {
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	return s.probe.conn
}

// TranslateStart is Open's and Migrate's translation of an attempt's error.
func TranslateStart(ctx context.Context, err error) error { return translateStart(ctx, err) }

// CreateDatabaseSQL is the statement ensureDatabase creates a missing
// database with, given template1's encoding.
func CreateDatabaseSQL(name, template1 string) string { return createDatabaseSQL(name, template1) }

// PruneEventsSQL is Prune's statement on the history: $1 retention
// seconds, $2 limit, $3 floor.
const PruneEventsSQL = pruneEventsSQL

// EventsFloor is where Prune's next walk of the history starts.
func (s *Store) EventsFloor() time.Time { return time.UnixMicro(s.eventsFloor.Load()) }
