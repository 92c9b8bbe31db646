package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrAttemptTimedOut is in the error of a transaction's attempt that
// outlasted Config.AttemptTimeout (with ErrTransient: InTx and InTxBatch
// retry it), and of a bounded read that did (Offsets).
var ErrAttemptTimedOut = errors.New("the attempt outlasted its bound (AttemptTimeout): its connection was closed")

// maxAttemptGrowth caps the growth of a transaction's bound: a server that
// hangs with TCP alive makes every attempt use all of its bound, and
// doubling without end would soon wait longer than TCP gives up after (16
// minutes at the default bound, about when Linux does). A transaction
// needing longer never commits: far beyond any of the worker's (a cleanup
// command of 100,000 locks takes 3.4 s on a small machine). It caps the
// growth of a transaction's idle limit too (attempt.idle): 320 s at the
// default, the longest a replica frozen in such a retry holds its rows.
const maxAttemptGrowth = 64

// attempt bounds the attempts of one transaction (Config.AttemptTimeout)
// and sets their idle limit (Config.IdleInTransactionTimeout).
type attempt struct {
	limit, max time.Duration // this attempt's bound (0: none), and the cap
	// ran says the last attempt's bound passed while its statements ran,
	// not while it waited for a connection.
	ran bool
	// idle is the idle_in_transaction_session_timeout this attempt sets
	// for its transaction (idleSQL), 0 for none: the connection's stands,
	// idleBase, which is Config.IdleInTransactionTimeout (0 when that is
	// negative: the server's, which never grows).
	idle, idleBase time.Duration
	// took is how long the last attempt's statements ran, from its
	// connection's handing out (0: never handed out), for idledOut.
	took time.Duration
}

// retryBounded is retry for a transaction's attempts, each bounded by its
// attempt, whose bound doubles, up to maxAttemptGrowth times the first,
// after an attempt whose statements outlasted it: one that only waited for
// a connection says nothing of how long the transaction needs. Its idle
// limit doubles likewise after an attempt PostgreSQL ended for idling
// (idledOut), or every retry would idle out as the first did: a
// transaction that ends thousands of leases builds its events in Go after
// its last statement, seconds on a busy machine, all of them idle.
func (s *Store) retryBounded(ctx context.Context, try func(*attempt) error) error {
	return s.retryBoundedBy(ctx, s.cfg, try)
}

// retryBoundedBy is retryBounded with cfg's retry policy.
func (s *Store) retryBoundedBy(ctx context.Context, cfg Config, try func(*attempt) error) error {
	limit, idle := max(cfg.AttemptTimeout, 0), max(cfg.IdleInTransactionTimeout, 0)
	a := &attempt{limit: limit, max: limit * maxAttemptGrowth, idleBase: idle}
	return retry(ctx, cfg, cfg.OnRetry, func() error {
		a.ran, a.took = false, 0
		err := try(a)
		if a.ran && errors.Is(err, ErrAttemptTimedOut) {
			a.limit = min(a.limit*2, a.max)
		}
		if a.idledOut(err) {
			a.idle = min(a.idleLimit()*2, a.idleBase*maxAttemptGrowth)
		}
		return err
	})
}

// idleLimit is the idle limit the attempt's transaction runs under, as far
// as the store knows (one the connection string gives wins: idleSQL).
func (a *attempt) idleLimit() time.Duration { return max(a.idle, a.idleBase) }

// idledOut reports whether err, the last attempt's, is PostgreSQL ending
// its transaction for idling longer than its idle limit: SQLSTATE 25P03,
// or its connection lost (a transient error not of the server's) after
// its statements ran at least that limit. The server writes its 25P03 and
// closes the connection; a client that writes its next statement before
// reading it, as a transaction building its last batch does, fails on
// the write (a broken pipe, a reset) and never sees the 25P03. A lost
// connection that lasted as long may have been a failover or a network's
// fault instead: its retry idles a longer limit too, which costs nothing
// but how long a replica frozen in that retry holds its rows. One sooner
// cannot be the idle limit's; nor one the attempt's bound closed
// (ErrAttemptTimedOut, the store's own doing).
func (a *attempt) idledOut(err error) bool {
	if a.idleBase == 0 || err == nil {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == "25P03"
	}
	return a.took >= a.idleLimit() && errors.Is(err, ErrTransient) && !errors.Is(err, ErrAttemptTimedOut)
}

// idleSQL is the statement that sets the attempt's idle limit for its
// transaction, sent right after BEGIN; "" for an attempt that keeps the
// connection's, as every one does until one idles out (the worker's
// applier sends nothing more per batch). setSQL's: a limit the connection
// string gives is left, winning as it does for the session's.
func (a *attempt) idleSQL() string {
	if a.idle == 0 {
		return ""
	}
	return setSQL([]setting{{"idle_in_transaction_session_timeout", strconv.FormatInt(a.idle.Milliseconds(), 10)}}, true, false)
}

// call runs fn on c, timing it (took).
func (a *attempt) call(c *pgxpool.Conn, fn func(*pgxpool.Conn) error) error {
	start := time.Now()
	defer func() { a.took = time.Since(start) }()
	return fn(c)
}

// run runs fn on a connection of pool, asked for under the attempt's
// deadline. The connection is closed when the deadline passes while fn
// runs, whatever context fn's statements were given: a connection that
// stopped answering fails them at once (pgx's own context watch covers
// only the context of each call). An fn that failed so, for a reason a
// retry may cure, its caller's ctx not done, fails with ErrTransient and
// ErrAttemptTimedOut; one that succeeded (COMMIT answered just as the
// bound passed) succeeded, and one that failed for another reason (a
// constraint, say) keeps its error.
func (a *attempt) run(ctx context.Context, pool *pgxpool.Pool, fn func(*pgxpool.Conn) error) error {
	if a.limit <= 0 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return translate(err)
		}
		defer c.Release()
		return a.call(c, fn)
	}
	actx, cancel := context.WithTimeoutCause(ctx, a.limit, ErrAttemptTimedOut)
	defer cancel()
	c, err := pool.Acquire(actx)
	if err == nil && actx.Err() != nil {
		c.Release() // had as the bound passed: the attempt only waited
		err = actx.Err()
	}
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
			nc := c.Conn().PgConn().Conn()
			if t, ok := nc.(*tls.Conn); ok {
				// Not tls.Conn's Close, which first writes close_notify
				// and may wait up to 5 s for a peer that reads nothing.
				nc = t.NetConn()
			}
			_ = nc.Close()
		}
	})
	defer func() {
		mu.Lock()
		running = false
		mu.Unlock()
		stop()
		if closed {
			// Marks it closed, so Release destroys it, also when fn's
			// last read came in before the close and nothing failed.
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = c.Conn().Close(cctx)
			ccancel()
		}
	}()
	err = a.call(c, fn)
	mu.Lock()
	running = false
	a.ran = closed
	mu.Unlock()
	if closed && err != nil {
		return a.timedOut(ctx, actx, err)
	}
	return err
}

// timedOut is err, an attempt's error (translated), as the attempt's
// timeout when its deadline ended it, not ctx: the closed connection's
// error (transient) or the deadline's own (waiting for a connection). Any
// other error that came in as the bound passed (a constraint, the worker's
// offset guard) stays what it is.
func (a *attempt) timedOut(ctx, actx context.Context, err error) error {
	switch {
	case err == nil || ctx.Err() != nil || context.Cause(actx) != ErrAttemptTimedOut:
		return err
	case errors.Is(err, ErrTransient):
		return fmt.Errorf("%w after %s: %w", ErrAttemptTimedOut, a.limit, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w after %s: %w", ErrTransient, ErrAttemptTimedOut, a.limit, err)
	}
	return err
}

// bounded is ctx bounded as a transaction's first attempt is, for a
// statement of its own (Offsets, AnyCommitted, Prune, CheckGroup), and
// done, which turns the statement's error into ErrTransient and
// ErrAttemptTimedOut when that bound ended it: pgx closes the connection at
// the deadline of the statement's context, so one that stopped answering
// cannot hold it.
func (s *Store) bounded(ctx context.Context) (context.Context, func(error) error, context.CancelFunc) {
	return s.boundedBy(ctx, s.cfg.AttemptTimeout)
}

// boundedBy is bounded with limit for the bound; none when limit is not
// positive.
func (s *Store) boundedBy(ctx context.Context, limit time.Duration) (context.Context, func(error) error, context.CancelFunc) {
	a := &attempt{limit: max(limit, 0)}
	if a.limit == 0 {
		return ctx, translate, func() {}
	}
	sctx, cancel := context.WithTimeoutCause(ctx, a.limit, ErrAttemptTimedOut)
	return sctx, func(err error) error { return a.timedOut(ctx, sctx, translate(err)) }, cancel
}

// AnyCommitted reports whether one of the transactions xids (of
// pg_current_xact_id) committed: after a COMMIT whose answer was lost, a
// retry asks whether an earlier attempt took effect. An xid this server has
// not handed out yet (at or past the snapshot's xmax: the old primary's,
// after an asynchronous failover) did not commit here; pg_xact_status
// would fail on it ("transaction ID ... is in the future", 22023), which
// reads as data PostgreSQL refuses, so the CASE does not ask it.
func (s *Store) AnyCommitted(ctx context.Context, xids []int64) (bool, error) {
	ctx, done, cancel := s.bounded(ctx)
	defer cancel()
	var committed bool
	err := s.Pool.QueryRow(ctx, `
		SELECT coalesce(bool_or(CASE WHEN x::text::xid8 < pg_snapshot_xmax(pg_current_snapshot())
			THEN pg_xact_status(x::text::xid8) = 'committed' ELSE false END), false)
		FROM unnest($1::bigint[]) AS x`,
		xids).Scan(&committed)
	return committed, done(err)
}
