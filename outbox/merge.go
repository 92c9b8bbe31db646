package outbox

import (
	"context"
	"slices"
	"sync"
	"time"
)

// merger runs concurrent calls of one query as one: calls that arrive while
// it runs are run together next, by one of their callers. Relays of many
// partitions reading the table at once then cost one SELECT and one DELETE,
// not one of each per partition; a lone call runs at once, as before.
type merger[Req, Res any] struct {
	// run answers reqs in order; an error answers all of them.
	run func(ctx context.Context, reqs []Req) ([]Res, error)
	// timeout bounds one run. The run does not end with the context of the
	// caller that leads it, which serves the others too, unless it ended
	// for ErrUnreachable (beyond).
	timeout time.Duration

	mu      sync.Mutex
	waiting []*mergedCall[Req, Res]
	busy    bool
}

type mergedCall[Req, Res any] struct {
	req  Req
	res  Res
	err  error
	done chan struct{} // closed when answered
	lead chan struct{} // closed when this caller must run the next batch
}

// do answers req, in a run of its own or merged with others. A caller whose
// ctx ends while it waits for another's run to end gives up its place,
// unless it was handed the lead; once its request runs, it waits for it.
func (m *merger[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	c := &mergedCall[Req, Res]{req: req, done: make(chan struct{}), lead: make(chan struct{})}
	m.mu.Lock()
	m.waiting = append(m.waiting, c)
	if m.busy {
		m.mu.Unlock()
		select {
		case <-c.done:
			return c.res, c.err
		case <-c.lead:
		case <-ctx.Done():
			if m.abandon(c) {
				var zero Res
				return zero, ctx.Err()
			}
			select { // taken by a run, or handed the lead meanwhile
			case <-c.done:
				return c.res, c.err
			case <-c.lead:
			}
		}
	} else {
		m.busy = true
		m.mu.Unlock()
	}
	m.lead(ctx)
	<-c.done
	return c.res, c.err
}

// abandon takes c out of the waiting calls; false when a run took it or it
// was handed the lead.
func (m *merger[Req, Res]) abandon(c *mergedCall[Req, Res]) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-c.lead:
		return false
	default:
	}
	i := slices.Index(m.waiting, c)
	if i < 0 {
		return false
	}
	m.waiting = slices.Delete(m.waiting, i, i+1)
	return true
}

// lead runs every waiting call, then hands the lead to a caller that came
// meanwhile, if any.
func (m *merger[Req, Res]) lead(ctx context.Context) {
	m.mu.Lock()
	calls := m.waiting
	m.waiting = nil
	m.mu.Unlock()

	reqs := make([]Req, len(calls))
	for i, c := range calls {
		reqs[i] = c.req
	}
	rctx, cancel := beyond(ctx, m.timeout)
	res, err := m.run(rctx, reqs)
	cancel()
	for i, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.res = res[i]
		}
		close(c.done)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.waiting) == 0 {
		m.busy = false
		return
	}
	close(m.waiting[0].lead)
}
