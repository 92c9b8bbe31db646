package httpapi

import (
	"context"
	"fmt"
)

// dbSlots is how many requests may read PostgreSQL at once. They use the
// worker's own pool (so a check fails when the worker cannot reach the
// database), and the port is open to probes and scrapes: without a bound,
// a burst of requests would hold the connections the worker's batches
// need. /metrics is bounded apart (maxScrapes at once, sharing their reads:
// two connections at most), and so is
// /health (one slot of its own): no burst of other requests, open ones
// like /health/postgres among them, keeps the readiness probe waiting past
// its timeout.
const dbSlots = 2

// withDB runs read holding one of the endpoints' slots, waiting for one
// until ctx ends.
func (s *server) withDB(ctx context.Context, read func(context.Context) error) error {
	return hold(ctx, s.db, nil, read)
}

// withProbeDB is withDB for /health: its own slot, or a shared one if that
// is free first, so that /health never has fewer than before it had its own
// (one /health cannot keep another, the readiness probe, waiting).
func (s *server) withProbeDB(ctx context.Context, read func(context.Context) error) error {
	return hold(ctx, s.probeDB, s.db, read)
}

// hold runs read holding a slot of a or of b (nil: none).
func hold(ctx context.Context, a, b chan struct{}, read func(context.Context) error) error {
	var held chan struct{}
	select {
	case a <- struct{}{}:
		held = a
	case b <- struct{}{}: // never chosen when b is nil
		held = b
	case <-ctx.Done():
		return fmt.Errorf("waiting for a turn to read PostgreSQL behind other HTTP requests: %w", ctx.Err())
	}
	defer func() { <-held }()
	return read(ctx)
}
