package httpapi

import (
	"context"
	"fmt"
)

// dbSlots is how many requests may read PostgreSQL at once. They use the
// worker's own pool (so a check fails when the worker cannot reach the
// database), and the port is open to probes and scrapes: without a bound,
// a burst of requests would hold the connections the worker's batches
// need. /metrics is bounded apart (one scrape at a time).
const dbSlots = 2

// withDB runs read holding one of the dbSlots, waiting for one until ctx
// ends.
func (s *server) withDB(ctx context.Context, read func(context.Context) error) error {
	select {
	case s.db <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for one of the %d PostgreSQL reads HTTP requests may run at once: %w", dbSlots, ctx.Err())
	}
	defer func() { <-s.db }()
	return read(ctx)
}
