package metrics

import (
	"errors"
	"time"

	"github.com/omninode/lockworker/store"
)

// The reasons of lockworker_db_retries_total.
const (
	// retryConnection: the database did not answer the transaction (a
	// connection refused, lost or timed out, a server starting up, shutting
	// down or out of connection slots), or a read-only server did: an
	// outage, when it lasts.
	retryConnection = "connection"
	// retryConflict: the database refused the transaction for another one
	// (serialization failure, deadlock, a lock another transaction held
	// past lock_timeout, a request_id's outcome inserted concurrently):
	// contention, not an outage.
	retryConflict = "conflict"
	// retryTimeout: an attempt outlasted its bound (store.ErrAttemptTimedOut,
	// POSTGRES_ATTEMPT_TIMEOUT), waiting for a connection or for answers: a
	// server or connection that stopped answering, or a transaction longer
	// than the bound.
	retryTimeout = "timeout"
	// retryResources: the database refused the transaction for want of its
	// own resources (store.OutOfResources: disk full, out of memory, an I/O
	// error): an outage of the server's, though it answers.
	retryResources = "resources"
)

// RetryReasons are every reason RetryReason gives.
var RetryReasons = []string{retryConnection, retryConflict, retryTimeout, retryResources}

// DBRetry fits store.Config.OnRetry: it counts a transaction retried after
// a transient error, by reason.
func (m *Metrics) DBRetry(_ int, err error, _ time.Duration) {
	m.dbRetries.WithLabelValues(RetryReason(err)).Inc()
}

// RetryReason is the reason of lockworker_db_retries_total a retry after
// err counts under: a conflict between transactions (store.Conflict), an
// attempt that outlasted its bound, a server out of resources, or anything
// else store retries.
func RetryReason(err error) string {
	switch {
	case store.Conflict(err):
		return retryConflict
	case errors.Is(err, store.ErrAttemptTimedOut):
		return retryTimeout
	case store.OutOfResources(err):
		return retryResources
	}
	return retryConnection
}
