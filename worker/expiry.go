package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/failstreak"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// maxExpirySleep bounds the scheduler's sleep, so a lease granted to this
// partition by another process's transaction is still ended within 1 s.
const maxExpirySleep = time.Second

// scheduleExpiry ends the partition's leases and waiters when they are due.
// It asks the partial indexes when the next one is due (by database time) and
// sleeps until then, waking early when a batch of this partition commits.
// A failure (the database unreachable) is retried after store.Backoff's
// pause, 100 ms doubling, but at most maxExpirySleep (1 s), so a lease due
// during a short outage still ends within about 1 s of the database's
// return; a wake-up ends the pause at once, as any committed batch of the
// partition wakes it then (wakeScheduler), which shows the database is
// back, once per streak (a failure the commits do not cure is the
// scheduler's own, and waits its pauses out). The failures are logged as
// a streak (failstreak): the first, then one line per 30 s, and one when
// it works again.
func (p *partition) scheduleExpiry(ctx context.Context) {
	w := p.w
	var streak failstreak.Streak
	// woke says a commit ended this streak's retry wait once already: if
	// the attempt it brought failed too, the failure is the scheduler's own
	// (the applier commits), and a commit per retry would contend with the
	// applier on the partition's rows, so the rest of the streak waits
	// its pauses out.
	woke := false
	for ctx.Err() == nil {
		wait, err := p.untilDue(ctx)
		step := "expiry scheduler: reading next due time"
		if err == nil && wait <= 0 {
			if p.hold(ctx) != nil {
				return // let go, or stopping, while a stall held it
			}
			var n int
			n, err = p.expireDue(ctx)
			step = "expiry scheduler: ending leases"
			if errors.Is(err, errStalled) {
				continue // held above, from the next step on
			}
			if errors.Is(err, errLetGo) {
				return // another's already
			}
			if err == nil && n == 0 {
				// Due rows locked by another transaction, which settles
				// them: do not spin.
				wait = 50 * time.Millisecond
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A wake from a commit before the failure says nothing of the
			// database now: drop it, so only a later one ends the wait.
			select {
			case <-p.wake:
			default:
			}
			p.retrying.Store(!woke) // from now: a commit ends the wait (wakeScheduler)
			n, ev := streak.Fail(&w.log, err)
			wait = expiryRetryIn(n)
			ev.Int32("partition", p.id).Dur("retry_in", wait).Msg(step)
		} else {
			woke = false
			streak.OK(&w.log).Int32("partition", p.id).Msg("expiry scheduler: works again")
		}
		if wait > 0 {
			wait = min(wait, maxExpirySleep)
			p.sleepsUntil.Store(time.Now().Add(wait).UnixNano())
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-p.wake:
				t.Stop()
				woke = woke || err != nil
			case <-t.C:
			}
			p.sleepsUntil.Store(0)
			p.retrying.Store(false)
		}
	}
}

// expiryRetryIn is the pause before the scheduler's retry after its n-th
// failure in a row: store.Backoff's, but at most maxExpirySleep.
func expiryRetryIn(n int) time.Duration {
	return min(store.Backoff(store.DefaultRetryBase, store.DefaultRetryMax, n), maxExpirySleep)
}

// sleepCtx sleeps for d, or until ctx is done: it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// wakeScheduler wakes the scheduler when a committed batch started a lease or
// a wait that ends before the scheduler means to look again (or while it is
// awake, so it looks again). Batches that start nothing sooner cost it no
// query. due is by the database's clock and sleepsUntil by ours: skew can
// only delay a wake-up, and maxExpirySleep bounds that. While the scheduler
// waits to retry a failure, every committed batch wakes it: the database
// is back, and leases may have fallen due meanwhile.
func (p *partition) wakeScheduler(due time.Time) {
	if !p.retrying.Load() {
		if due.IsZero() {
			return
		}
		if until := p.sleepsUntil.Load(); until != 0 && due.UnixNano() >= until {
			return
		}
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// dueBy is when the earliest lease, wait or session that a command's events
// started ends: a grant's expires_at, a queued acquire's deadline, a
// session's expiry (zero: none).
func dueBy(c topics.Command, evs []topics.Event) time.Time {
	var due time.Time
	for _, ev := range evs {
		switch {
		case ev.Type == topics.TypeAcquired && ev.LockInfo != nil && ev.LockInfo.ExpiresAt != nil:
			due = earliest(due, ev.LockInfo.ExpiresAt.Time)
		case ev.Type == topics.TypeQueued && ev.RequestID == c.RequestID:
			due = earliest(due, ev.OccurredAt.Add(time.Duration(c.WaitTimeout*float64(time.Second))))
		case ev.SessionInfo != nil && (ev.Type == topics.TypeSessionOpened || ev.Type == topics.TypeSessionKeptAlive):
			due = earliest(due, ev.SessionInfo.ExpiresAt.Time)
		}
	}
	return due
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// nextDueTimeout bounds one read of next due times; it fails like any
// other, and is retried after the backoff.
const nextDueTimeout = 10 * time.Second

// untilDue is how long until the partition's next lease or waiter ends, by
// database time; maxExpirySleep when nothing is due. The worker's
// schedulers read together (dueReads): an idle worker asks once a second
// in one statement, not one per partition.
func (p *partition) untilDue(ctx context.Context) (time.Duration, error) {
	due, err := p.w.dueReads.read(ctx, p.w.cfg.Store, p.id)
	if err != nil || !due.OK {
		return maxExpirySleep, err
	}
	return due.In, nil
}

// dueReadPatience is how long a scheduler waits for merged reads before it
// reads alone as well, taking whichever answers first. A healthy merged
// read of a thousand partitions takes milliseconds; one that takes longer
// is stuck (a connection that stopped answering) or slow. The scheduler
// reads again at a lease's due time before it ends it, so that read's
// delay is the lease's lateness: a stuck merged read costs this much more
// than a read alone, and a slow one nothing (its answer is taken if it
// comes first), but for a caller that queued behind a run in flight, which
// waits for at most this plus one read of its own.
const dueReadPatience = maxExpirySleep / 5

// dueBatcher merges the expiry schedulers' reads of their next due times:
// reads asked for while one runs are run together next, in one statement
// (handlers.NextDues). The merge must not couple the partitions, so each
// caller waits on its own context and at most dueReadPatience; a run's
// statement runs in a goroutine of its own, serving whoever still waits,
// and is cancelled once none does. A withdrawal, a revoke or a stop ends
// the partitions' contexts (all children of the serving one), and so the
// runs at once, whichever partition's read started them. Purpose-built
// rather than the relay's merger, whose runs are led by a caller and
// serve it to the end. The zero value is ready.
type dueBatcher struct {
	mu      sync.Mutex
	next    *dueRun // run when the running one ends
	running bool
	// patience is dueReadPatience, or a test's longer one (0: the
	// constant): on a busy machine 200 ms may pass before a merged read.
	patience time.Duration
}

// dueRun is one merged read.
type dueRun struct {
	ids     []int32
	dues    []handlers.Due
	err     error
	done    chan struct{} // closed when answered
	waiting int           // callers waiting for it, under the batcher's mu
	cancel  context.CancelFunc
}

// read is partition id's next due time, from a merged read or, past
// dueReadPatience, one of its own.
func (b *dueBatcher) read(ctx context.Context, st *store.Store, id int32) (handlers.Due, error) {
	b.mu.Lock()
	r := b.next
	if r == nil {
		r = &dueRun{done: make(chan struct{})}
		b.next = r
	}
	i := len(r.ids)
	r.ids = append(r.ids, id)
	r.waiting++
	if !b.running {
		b.start(st)
	}
	b.mu.Unlock()

	wait := dueReadPatience
	if b.patience > 0 {
		wait = b.patience
	}
	patience := time.NewTimer(wait)
	defer patience.Stop()
	var own chan dueAnswer // a read of its own, once patience ran out
	for {
		select {
		case <-r.done:
			if r.err != nil {
				return handlers.Due{}, r.err
			}
			return r.dues[i], nil
		case <-ctx.Done():
			b.leave(r)
			return handlers.Due{}, ctx.Err()
		case <-patience.C:
			// Bounded, as a transaction's attempt is: a connection that
			// stopped answering would hold the partition's expiries until
			// TCP gives up. Ended when read returns, whoever answered.
			octx, cancel := context.WithTimeout(ctx, nextDueTimeout)
			defer cancel()
			own = make(chan dueAnswer, 1)
			go func() {
				dues, err := handlers.NextDues(octx, st.Pool, []int32{id})
				own <- dueAnswer{dues, err}
			}()
		case a := <-own:
			b.leave(r)
			if a.err != nil {
				return handlers.Due{}, a.err
			}
			return a.dues[0], nil
		}
	}
}

// dueAnswer is a read's answer.
type dueAnswer struct {
	dues []handlers.Due
	err  error
}

// start runs b.next, under b.mu; at its end it starts the one gathered
// meanwhile.
func (b *dueBatcher) start(st *store.Store) {
	r := b.next
	b.next = nil
	b.running = true
	// Its callers' contexts do not bound it: it serves them all, and the
	// last to leave cancels it.
	ctx, cancel := context.WithTimeout(context.Background(), nextDueTimeout)
	r.cancel = cancel
	go func() {
		r.dues, r.err = handlers.NextDues(ctx, st.Pool, r.ids)
		cancel()
		close(r.done)
		b.mu.Lock()
		defer b.mu.Unlock()
		b.running = false
		if b.next != nil {
			b.start(st)
		}
	}()
}

// leave takes a caller out of r: a run no caller waits for is dropped, or
// cancelled if it runs.
func (b *dueBatcher) leave(r *dueRun) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.waiting--; r.waiting > 0 {
		return
	}
	if r == b.next {
		b.next = nil
		return
	}
	r.cancel()
}

// expireDue runs the expiry step in a transaction that, like every writer of
// this partition's outbox, first locks the partition's offset row. Its
// retries pause at most maxExpirySleep (1 s), as the scheduler's own do,
// not the store's up to 5 s: a lease due during an outage ends within
// about 1 s of the database's return.
func (p *partition) expireDue(ctx context.Context) (int, error) {
	w := p.w
	var n int
	var caused []topics.Event
	inTx := func(ctx context.Context, fn func(pgx.Tx) error) error {
		return w.cfg.Store.InTxPausing(ctx, maxExpirySleep, fn)
	}
	err := w.writeTx(ctx, inTx, func(tx pgx.Tx) (*handlers.Batch, error) {
		if _, err := store.LockOffset(ctx, tx, w.cfg.Group, w.cfg.Names.Commands, p.id); err != nil {
			return nil, err
		}
		if err := p.mayWrite(); err != nil {
			return nil, err // lost, or stalled, while it waited for the row
		}
		b := handlers.NewBatch(tx, w.env(p.id))
		var err error
		n, caused, err = b.ExpireDue(ctx)
		return b, err
	})
	if err != nil {
		return 0, err
	}
	// A step that only handed a lock on (a lock-delay passed, a waiter
	// granted) ended no lease, but its events count.
	if len(caused) > 0 {
		w.cfg.Metrics.Events("", caused)
	}
	return n, nil
}
