package httpapi

import (
	"context"
	"fmt"
)

// dbSlots is how many requests may read PostgreSQL at once. They use the
// worker's own pool (so a check fails when the worker cannot reach the
// database), and the port is open to probes and scrapes: without a bound,
// a burst of requests would hold the connections the worker's batches
// need. /metrics is bounded apart (one scrape at a time), and so is
// /health (one slot of its own): no burst of other requests, open ones
// like /health/postgres among them, keeps the readiness probe waiting past
// its timeout.
const dbSlots = 2

// withDB runs read holding one of slots (server.db, or server.probeDB for
// /health), waiting for one until ctx ends.
func withDB(ctx context.Context, slots chan struct{}, read func(context.Context) error) error {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for a turn to read PostgreSQL behind other HTTP requests: %w", ctx.Err())
	}
	defer func() { <-slots }()
	return read(ctx)
}
