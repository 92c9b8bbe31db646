package metrics

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The reasons of lockworker_db_retries_total.
const (
	// retryConnection: the database did not answer the transaction (a
	// connection refused, lost or timed out, a server starting up, shutting
	// down or out of connection slots): an outage, when it lasts.
	retryConnection = "connection"
	// retryConflict: the database refused the transaction for another one
	// (serialization failure, deadlock, a request_id's outcome inserted
	// concurrently): contention, not an outage.
	retryConflict = "conflict"
)

// RetryReasons are every reason RetryReason gives.
var RetryReasons = []string{retryConnection, retryConflict}

// DBRetry fits store.Config.OnRetry: it counts a transaction retried after
// a transient error, by reason.
func (m *Metrics) DBRetry(_ int, err error, _ time.Duration) {
	m.dbRetries.WithLabelValues(RetryReason(err)).Inc()
}

// RetryReason is the reason of lockworker_db_retries_total a retry after
// err counts under: a conflict between transactions, which PostgreSQL
// reports with one of three SQLSTATEs, or anything else store retries.
func RetryReason(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", "23505": // serialization failure, deadlock, unique violation (processed_requests_pkey)
			return retryConflict
		}
	}
	return retryConnection
}
