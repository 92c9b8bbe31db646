package worker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// dueReads counts the statements that read next due times and those that
// failed; it stalls the starts of the first ones by delays in turn, as a
// connection that stopped answering would (until the read's context ends).
type dueReads struct {
	n, failed atomic.Int32
	delays    []time.Duration
}

// dueReadKey marks the context of a due read for its end.
type dueReadKey struct{}

func (d *dueReads) TraceQueryStart(ctx context.Context, _ *pgx.Conn, q pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(q.SQL, "FROM lock_holders WHERE source_partition") {
		return ctx
	}
	if i := int(d.n.Add(1)) - 1; i < len(d.delays) {
		select {
		case <-ctx.Done():
		case <-time.After(d.delays[i]):
		}
	}
	return context.WithValue(ctx, dueReadKey{}, true)
}

func (d *dueReads) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, q pgx.TraceQueryEndData) {
	if ctx.Value(dueReadKey{}) != nil && q.Err != nil {
		d.failed.Add(1)
	}
}

// TestUntilDueMergesPartitions: the schedulers of many partitions that read
// their next due times while a read runs are answered by one statement
// together, not one each, and each gets its own partition's due time.
func TestUntilDueMergesPartitions(t *testing.T) {
	reads := &dueReads{}
	st := testdb.NewWith(t, store.Config{Tracer: reads})
	ctx := t.Context()
	_, err := st.Pool.Exec(ctx, `INSERT INTO sessions (id, owner_id, ttl, expires_at, source_partition) VALUES
		('s1', 'o', 30, clock_timestamp() + interval '30 s', 1), ('s2', 'o', 90, clock_timestamp() + interval '90 s', 2)`)
	require.NoError(t, err)
	// The first read waits on this lock; the others come meanwhile.
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	// Patient enough that none reads alone on a busy machine.
	w.dueReads.patience = time.Minute
	const n = 8
	in := make([]time.Duration, n+1)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	read := func(id int32) {
		p := &partition{w: w, id: id, wake: make(chan struct{}, 1)}
		in[id], errs[id] = p.untilDue(ctx)
	}
	wg.Go(func() { read(1) })
	require.Eventually(t, func() bool { return reads.n.Load() == 1 }, 10*time.Second, time.Millisecond)
	for id := int32(2); id <= n; id++ {
		wg.Go(func() { read(id) })
	}
	// The others wait behind the first read, within their patience.
	require.Eventually(t, func() bool {
		w.dueReads.mu.Lock()
		defer w.dueReads.mu.Unlock()
		return w.dueReads.next != nil && len(w.dueReads.next.ids) == n-1
	}, 10*time.Second, time.Millisecond)
	require.NoError(t, tx.Rollback(ctx))
	wg.Wait()

	require.LessOrEqual(t, reads.n.Load(), int32(2), "the first read, then one for the %d partitions that came meanwhile", n-1)
	for id := 1; id <= n; id++ {
		require.NoError(t, errs[id], "partition %d", id)
	}
	require.InDelta(t, 30*time.Second, in[1], float64(5*time.Second), "partition 1's session")
	require.InDelta(t, 90*time.Second, in[2], float64(5*time.Second), "partition 2's session")
	for id := 3; id <= n; id++ {
		require.Equal(t, maxExpirySleep, in[id], "partition %d has nothing due", id)
	}
}

// TestUntilDueNotHeldByAStuckRead: a read stuck on a connection that stopped
// answering holds the schedulers waiting behind it no longer than
// dueReadPatience; they read alone, and the stuck read, left by all, ends.
func TestUntilDueNotHeldByAStuckRead(t *testing.T) {
	reads := &dueReads{delays: []time.Duration{time.Minute}}
	st := testdb.NewWith(t, store.Config{Tracer: reads})
	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	p1 := &partition{w: w, id: 1, wake: make(chan struct{}, 1)}
	p2 := &partition{w: w, id: 2, wake: make(chan struct{}, 1)}
	first := make(chan error, 1)
	go func() { _, err := p1.untilDue(t.Context()); first <- err }()
	require.Eventually(t, func() bool { return reads.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	began := time.Now()
	in, err := p2.untilDue(t.Context())
	require.NoError(t, err)
	require.Equal(t, maxExpirySleep, in)
	require.Less(t, time.Since(began), time.Second, "partition 2's read is answered within the scheduler's second")
	require.NoError(t, <-first, "partition 1 too reads alone")
	// (The read gathered behind it may start and be cancelled too, as
	// partition 2 leaves it.)
	require.Eventually(t, func() bool { return reads.failed.Load() >= 1 }, 5*time.Second, time.Millisecond, "the stuck read, waited for by none, is cancelled")
}

// TestUntilDueLeaderLeavesAtItsStop: a scheduler whose partition is revoked
// while the read it started runs returns at once (the revoke waits for it),
// and the read, which no one else waits for, is cancelled.
func TestUntilDueLeaderLeavesAtItsStop(t *testing.T) {
	reads := &dueReads{}
	st := testdb.NewWith(t, store.Config{Tracer: reads})
	tx, err := st.Pool.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(t.Context(), `LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE`) // the read waits on it
	require.NoError(t, err)
	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	// Patient past the test: past dueReadPatience p would read alone too,
	// a second read blocked on the lock, and cancelled with the first.
	w.dueReads.patience = time.Minute
	ctx, cancel := context.WithCancel(t.Context())
	p := &partition{w: w, id: 1, wake: make(chan struct{}, 1)}
	done := make(chan time.Time, 1)
	go func() { _, _ = p.untilDue(ctx); done <- time.Now() }()
	require.Eventually(t, func() bool { return reads.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond) // in PostgreSQL, on the lock
	stopped := time.Now()
	cancel()
	require.Less(t, (<-done).Sub(stopped), 200*time.Millisecond, "a revoked scheduler's untilDue returns at once")
	require.Eventually(t, func() bool { return reads.failed.Load() == 1 }, 2*time.Second, time.Millisecond, "its read is cancelled")
}

// TestUntilDueWithdrawalEndsRun: a withdrawal (the serving context, parent
// of every partition's, ending) ends a run at once, though the partition
// that started it was revoked before.
func TestUntilDueWithdrawalEndsRun(t *testing.T) {
	reads := &dueReads{delays: []time.Duration{300 * time.Millisecond, time.Minute}}
	st := testdb.NewWith(t, store.Config{Tracer: reads})
	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	// Patient past the test: with dueReadPatience (200 ms, under the first
	// read's 300 ms) p2 and p3 would read alone before the merged read
	// starts, the second read counted would be p2's own, and p3 could
	// return, or have a read in flight, before the withdrawal.
	w.dueReads.patience = time.Minute
	serving, withdraw := context.WithCancelCause(t.Context())
	c2, revoke := context.WithCancel(serving)
	defer revoke()
	c3, stop3 := context.WithCancel(serving)
	defer stop3()
	p1 := &partition{w: w, id: 1, wake: make(chan struct{}, 1)}
	p2 := &partition{w: w, id: 2, wake: make(chan struct{}, 1)}
	p3 := &partition{w: w, id: 3, wake: make(chan struct{}, 1)}
	go func() { _, _ = p1.untilDue(t.Context()) }()
	require.Eventually(t, func() bool { return reads.n.Load() == 1 }, 5*time.Second, time.Millisecond)
	go func() { _, _ = p2.untilDue(c2) }()
	time.Sleep(20 * time.Millisecond)
	done := make(chan time.Time, 1)
	go func() { _, _ = p3.untilDue(c3); done <- time.Now() }()
	require.Eventually(t, func() bool { return reads.n.Load() == 2 }, 5*time.Second, time.Millisecond) // the second read: p2's and p3's
	revoke()
	time.Sleep(50 * time.Millisecond)
	withdraw(errWithdrawn)
	began := time.Now()
	require.Less(t, (<-done).Sub(began), 200*time.Millisecond, "a withdrawal ends the wait at once")
	require.Eventually(t, func() bool { return reads.failed.Load() == 1 }, 2*time.Second, time.Millisecond, "and the read")
}

// A slow but answering database (every next-due read 600 ms, past
// dueReadPatience): the merged read's answer is taken when it comes first,
// so untilDue costs one read, not the patience and a read of its own.
func TestUntilDueSlowReadNotDelayed(t *testing.T) {
	delays := make([]time.Duration, 20)
	for i := range delays {
		delays[i] = 600 * time.Millisecond
	}
	reads := &dueReads{delays: delays}
	st := testdb.NewWith(t, store.Config{Tracer: reads})
	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	p := &partition{w: w, id: 1, wake: make(chan struct{}, 1)}
	began := time.Now()
	_, err := p.untilDue(t.Context())
	require.NoError(t, err)
	require.Less(t, time.Since(began), time.Second, "one read of 600 ms answers within the scheduler's second")
}
