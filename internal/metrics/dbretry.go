package metrics

import (
	"time"

	"github.com/omninode/lockworker/store"
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
// err counts under: a conflict between transactions (store.Conflict), or
// anything else store retries.
func RetryReason(err error) string {
	if store.Conflict(err) {
		return retryConflict
	}
	return retryConnection
}
