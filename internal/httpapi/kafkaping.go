package httpapi

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/singleflight"
)

// sharedPing runs one Kafka ping at a time on the worker's client, whose
// answer every request that asked meanwhile shares: the port is open to
// probes, and a burst of /health and /health/kafka requests would otherwise
// send the brokers as many requests (withDB's slots bound its PostgreSQL
// reads the same way).
type sharedPing struct {
	ping    func(context.Context) error
	timeout time.Duration
	flight  singleflight.Group
}

// Ping joins the ping under way, or starts one, and waits for its answer
// until ctx ends. The ping has its own timeout, not the context of the
// request that started it: a request that gives up does not fail the
// others.
func (p *sharedPing) Ping(ctx context.Context) error {
	call := p.flight.DoChan("ping", func() (any, error) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
		defer cancel()
		return nil, p.ping(pctx)
	})
	select {
	case res := <-call:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Kafka ping under way: %w", ctx.Err())
	}
}
