package metrics

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// TestMetricDBRetries: lockworker_db_retries_total starts at 0 for both
// reasons (so rate() sees the first retry) and counts what store.OnRetry is
// told: a refused connection or a server shutting down as connection, a
// serialization failure, a deadlock or a concurrent request_id as conflict,
// an attempt that outlasted its bound as timeout, a disk full as resources.
func TestMetricDBRetries(t *testing.T) {
	m := New(Config{})
	count := func(reason string) float64 {
		return series(t, m, "lockworker_db_retries_total", "reason", reason).GetCounter().GetValue()
	}
	require.Zero(t, count("connection"))
	require.Zero(t, count("conflict"))
	require.Zero(t, count("timeout"))
	require.Zero(t, count("resources"))

	wrap := func(err error) error { return fmt.Errorf("%w: %w", store.ErrTransient, err) }
	m.DBRetry(1, wrap(errors.New("dial tcp 10.0.0.5:5432: connect: connection refused")), time.Second)
	m.DBRetry(2, wrap(&pgconn.PgError{Code: "57P01"}), time.Second) // admin shutdown
	m.DBRetry(1, wrap(&pgconn.PgError{Code: "40001"}), time.Second)
	m.DBRetry(1, wrap(&pgconn.PgError{Code: "40P01"}), time.Second)
	m.DBRetry(1, wrap(&pgconn.PgError{Code: "23505", ConstraintName: "processed_requests_pkey"}), time.Second)
	m.DBRetry(1, fmt.Errorf("%w: %w after 15s: %w", store.ErrTransient, store.ErrAttemptTimedOut, errors.New("read: use of closed network connection")), time.Second)
	require.Equal(t, 2.0, count("connection"))
	require.Equal(t, 3.0, count("conflict"))
	require.Equal(t, 1.0, count("timeout"))
	m.DBRetry(1, wrap(&pgconn.PgError{Code: "53100"}), time.Second) // disk full
	m.DBRetry(1, wrap(&pgconn.PgError{Code: "53300"}), time.Second) // out of connection slots: connection
	require.Equal(t, 1.0, count("resources"))
	require.Equal(t, 3.0, count("connection"))
}
