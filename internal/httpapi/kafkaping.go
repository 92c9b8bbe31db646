package httpapi

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// sharedPing runs one Kafka ping at a time on the worker's client, whose
// answer every request that asked meanwhile shares: the port is open to
// probes, and a burst of /health and /health/kafka requests would otherwise
// send the brokers as many requests (withDB's slots bound its PostgreSQL
// reads the same way).
type sharedPing struct {
	ping    func(context.Context) error
	timeout time.Duration

	mu      sync.Mutex
	running *pingCall // nil: none under way
}

type pingCall struct {
	done chan struct{}
	err  error
}

// Ping joins the ping under way, or starts one, and waits for its answer
// until ctx ends. The ping has its own timeout, not the context of the
// request that started it: a request that gives up does not fail the
// others.
func (p *sharedPing) Ping(ctx context.Context) error {
	p.mu.Lock()
	c := p.running
	if c == nil {
		c = &pingCall{done: make(chan struct{})}
		p.running = c
		go p.run(context.WithoutCancel(ctx), c)
	}
	p.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Kafka ping under way: %w", ctx.Err())
	}
}

func (p *sharedPing) run(ctx context.Context, c *pingCall) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	c.err = p.ping(ctx)
	p.mu.Lock()
	p.running = nil
	p.mu.Unlock()
	close(c.done)
}
