package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrAttemptTimedOut is in the error of a transaction's attempt that
// outlasted Config.AttemptTimeout (with ErrTransient: InTx and InTxBatch
// retry it).
var ErrAttemptTimedOut = errors.New("the transaction's attempt outlasted its bound (AttemptTimeout): its connection was closed")

// attempt bounds the attempts of one transaction (Config.AttemptTimeout).
type attempt struct {
	limit time.Duration // this attempt's bound; 0: none
}

// retryBounded is retry for a transaction's attempts, each bounded by its
// attempt, whose bound doubles after an attempt that outlasted it.
func (s *Store) retryBounded(ctx context.Context, try func(*attempt) error) error {
	a := &attempt{limit: max(s.cfg.AttemptTimeout, 0)}
	return s.retry(ctx, func() error {
		err := try(a)
		if errors.Is(err, ErrAttemptTimedOut) {
			a.limit *= 2
		}
		return err
	})
}

// run runs fn on a connection of pool, asked for under the attempt's
// deadline. The connection is closed when the deadline passes while fn
// runs, whatever context fn's statements were given: a connection that
// stopped answering fails them at once (pgx's own context watch covers
// only the context of each call). An fn that failed so, its caller's ctx
// not done, fails with ErrTransient and ErrAttemptTimedOut; one that
// succeeded (COMMIT answered just as the bound passed) succeeded.
func (a *attempt) run(ctx context.Context, pool *pgxpool.Pool, fn func(*pgxpool.Conn) error) error {
	if a.limit <= 0 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return translate(err)
		}
		defer c.Release()
		return fn(c)
	}
	actx, cancel := context.WithTimeoutCause(ctx, a.limit, ErrAttemptTimedOut)
	defer cancel()
	c, err := pool.Acquire(actx)
	if err != nil {
		return a.timedOut(ctx, actx, translate(err))
	}
	defer c.Release()
	var mu sync.Mutex
	running, closed := true, false
	stop := context.AfterFunc(actx, func() {
		mu.Lock()
		defer mu.Unlock()
		if running && context.Cause(actx) == ErrAttemptTimedOut {
			closed = true
			_ = c.Conn().PgConn().Conn().Close()
		}
	})
	err = fn(c)
	mu.Lock()
	running = false
	mu.Unlock()
	stop()
	if closed {
		// Marks it closed, so Release destroys it, also when fn's last
		// read came in before the close and nothing failed.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = c.Conn().Close(cctx)
		ccancel()
		if err != nil {
			return a.timedOut(ctx, actx, err)
		}
	}
	return err
}

// timedOut is err, the attempt's error, as the attempt's timeout when its
// deadline ended it and not ctx.
func (a *attempt) timedOut(ctx, actx context.Context, err error) error {
	if ctx.Err() != nil || context.Cause(actx) != ErrAttemptTimedOut {
		return err
	}
	return fmt.Errorf("%w: %w after %s: %w", ErrTransient, ErrAttemptTimedOut, a.limit, err)
}
