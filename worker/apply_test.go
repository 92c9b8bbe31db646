package worker

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// These tests drive the applier directly with records, where the end-to-end
// tests cannot place a failure: between a COMMIT that took effect and its
// answer, and a partition taken over between two batches.

type nopRelay struct{}

func (nopRelay) RunHeld(ctx context.Context, _ int32, _ func(context.Context) error) error {
	<-ctx.Done()
	return nil
}
func (nopRelay) Reserve(int32) *outbox.Slot { return nil }

func newApplier(t testing.TB) (*Worker, *store.Store) {
	t.Helper()
	// No commands topic: the records here are made up, and a member assigned
	// its partitions would find them past the empty log's end (checkLogEnds).
	return newApplierOn(t, kafkatest.Cluster(t))
}

// newApplierOn is newApplier with the broker c.
func newApplierOn(t testing.TB, c *kfake.Cluster) (*Worker, *store.Store) {
	t.Helper()
	st := testdb.New(t)
	w, err := New(Config{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Relay: nopRelay{}})
	require.NoError(t, err)
	t.Cleanup(w.cl.Close)
	t.Cleanup(w.killHard)
	noWake := context.CancelFunc(func() {}) // no poll loop to wake (seekTo)
	w.wakePoll.Store(&noWake)
	return w, st
}

// own assigns partition id to w, as the group does.
func own(w *Worker, id int32) *partition {
	w.assigned(context.Background(), w.cl, map[string][]int32{w.cfg.Names.Commands: {id}})
	return owned(w, id)
}

// owned is w's partition id now.
func owned(w *Worker, id int32) *partition {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.parts[id]
}

// records makes acquire records of partition p at offsets from.., one lock each.
func records(t *testing.T, p int32, from int64, locks ...string) []*kgo.Record {
	var rs []*kgo.Record
	for i, lock := range locks {
		off := from + int64(i)
		v, err := topics.Command{RequestID: "r-" + strconv.Itoa(int(p)) + "-" + strconv.FormatInt(off, 10), Operation: topics.OpAcquire,
			LockName: lock, OwnerID: "o"}.Encode()
		require.NoError(t, err)
		rs = append(rs, &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: p, Offset: off, Key: []byte(lock), Value: v})
	}
	return rs
}

func storedOffset(t testing.TB, st *store.Store, p int32) int64 {
	t.Helper()
	offs, err := st.Offsets(context.Background(), "lockworker", topics.DefaultNames().Commands)
	require.NoError(t, err)
	return offs[p].Next
}

func acquisitions(t testing.TB, st *store.Store, lock string) (n int64) {
	t.Helper()
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT acquisition_count FROM locks WHERE lock_name = $1`, lock).Scan(&n))
	return n
}

// apply submits segments as the poll loop does and applies them.
func apply(w *Worker, segs ...segment) {
	for _, s := range segs {
		s.p.pending.Add(1)
	}
	w.applySegments(context.Background(), segs)
}

func seg(t *testing.T, p *partition, from int64, locks ...string) segment {
	return segment{p: p, records: records(t, p.id, from, locks...), polledAt: time.Now()}
}

// A batch whose COMMIT took effect but whose answer was lost is retried by
// InTx; the offset guard refuses the retry, and the applier, learning from
// PostgreSQL that the first attempt's transaction committed, takes the batch
// as applied instead of stopping the partitions as taken over.
func TestRetryFindsBatchCommitted(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	apply(w, seg(t, p0, 0, "first0"), seg(t, p1, 0, "first1"))
	parts := group([]segment{seg(t, p0, 1, "a", "b"), seg(t, p1, 1, "c")})
	var sent *sentAttempt
	_, err := w.applyTx(ctx, parts, &sent, nil, false) // commits; suppose its answer was lost
	require.NoError(t, err)
	require.NotNil(t, sent)
	require.EqualValues(t, 3, storedOffset(t, st, 0))

	// InTx's retry: the same records, the same expected offsets.
	_, err = w.applyTx(ctx, parts, &sent, nil, false)
	var moved *store.OffsetMovedError
	require.ErrorAs(t, err, &moved)
	rest, err := w.settleMoved(ctx, parts, moved, &sent, time.Now())
	require.NoError(t, err)
	require.Empty(t, rest)
	require.NoError(t, p0.ctx.Err(), "partition 0 must not be stopped")
	require.NoError(t, p1.ctx.Err(), "partition 1 must not be stopped")
	require.EqualValues(t, 3, p0.expected)
	require.EqualValues(t, 2, p1.expected)
	for _, lock := range []string{"a", "b", "c"} {
		require.EqualValues(t, 1, acquisitions(t, st, lock), "lock %s applied once", lock)
	}

	// The partitions go on from there.
	apply(w, seg(t, p0, 3, "d"))
	require.EqualValues(t, 4, storedOffset(t, st, 0))
}

// A zombie: another worker took the partition over and applied the very
// records this one was about to, so the stored offset is where this batch
// would have put it. None of this batch's transactions committed, so the
// batch is not taken as applied: its records are dropped and the partition
// restarts from the stored offset.
func TestTakeoverToTheSameOffsetRestartsPartition(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0 := own(w, 0)
	apply(w, seg(t, p0, 0, "a"))
	require.EqualValues(t, 1, p0.expected)
	_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 3 WHERE partition = 0`) // the other worker
	require.NoError(t, err)

	apply(w, seg(t, p0, 1, "x", "y"))
	require.Error(t, p0.ctx.Err(), "partition 0 is stopped")
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name IN ('x', 'y')`).Scan(&n))
	require.Zero(t, n, "not applied by this worker")
	require.Equal(t, &store.Position{Next: 3, Epoch: -1}, restarted(t, w, p0).seek.Load(), "it restarts from the stored offset")
}

// A partition whose stored offset moved (another worker applied more of it)
// is stopped without applying its records, and restarts from the stored
// offset; the other partitions of the batch are applied.
func TestMovedPartitionRestartsAlone(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0, p1 := own(w, 0), own(w, 1)
	apply(w, seg(t, p0, 0, "a"), seg(t, p1, 0, "b"))
	// Another worker applied more of partition 0.
	_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 5 WHERE partition = 0`)
	require.NoError(t, err)

	apply(w, seg(t, p0, 1, "x"), seg(t, p1, 1, "y"))
	require.Error(t, p0.ctx.Err(), "partition 0 is stopped")
	require.NoError(t, p1.ctx.Err())
	require.EqualValues(t, 5, storedOffset(t, st, 0), "the other worker's offset stays")
	require.EqualValues(t, 2, storedOffset(t, st, 1))
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name = 'x'`).Scan(&n))
	require.Zero(t, n, "the stopped partition's record is not applied")
	require.EqualValues(t, 1, acquisitions(t, st, "y"))

	// Its records still queued are dropped, not applied.
	apply(w, seg(t, p0, 5, "z"))
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name = 'z'`).Scan(&n))
	require.Zero(t, n)
	require.Equal(t, &store.Position{Next: 5, Epoch: -1}, restarted(t, w, p0).seek.Load(), "it restarts from the stored offset")
	require.Same(t, p1, owned(w, 1))
}

// A partition restarted again soon after its last restart waits first
// (restartDelay), and each restart is counted: while a stale replica and
// the owner both apply a partition, each commit of one restarts the other.
// A restart waiting gives up when the worker stops, uncounted.
func TestRepeatedRestartsBackOff(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	var counted atomic.Int32
	w.restarted = func() { counted.Add(1) }
	moveTo := func(next int) {
		_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = $1 WHERE partition = 0`, next)
		require.NoError(t, err)
	}
	p := own(w, 0)
	apply(w, seg(t, p, 0, "a"))
	moveTo(3)
	apply(w, seg(t, p, 1, "b"))
	p = restarted(t, w, p)
	require.EqualValues(t, 1, counted.Load())

	apply(w, seg(t, p, 3, "c"))
	moveTo(6)
	start := time.Now()
	apply(w, seg(t, p, 4, "d"))
	p = restarted(t, w, p)
	require.GreaterOrEqual(t, time.Since(start), restartFirstDelay, "restarted again at once")
	require.EqualValues(t, 2, counted.Load())

	apply(w, seg(t, p, 6, "e"))
	moveTo(9)
	w.mu.Lock()
	w.restarts[0] = restartLog{at: time.Now(), delay: restartMaxDelay}
	w.mu.Unlock()
	apply(w, seg(t, p, 7, "f")) // restarts in restartMaxDelay
	stopped := make(chan struct{})
	go func() { w.stopAll(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(restartMaxDelay / 2):
		t.Fatal("stopping waited for the restart's delay")
	}
	require.Empty(t, w.Partitions(), "not restarted once stopped")
	require.EqualValues(t, 2, counted.Load(), "the restart given up is not counted")
}

func TestRestartDelay(t *testing.T) {
	w, _ := newApplier(t)
	var due time.Time // of the last restart
	var delays []time.Duration
	for now := time.Now(); len(delays) < 8; now = due.Add(time.Second) {
		d := w.restartDelay(0, now)
		delays, due = append(delays, d), now.Add(d)
	}
	ms := time.Millisecond
	require.Equal(t, []time.Duration{0, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms}, delays)
	require.Zero(t, w.restartDelay(1, due), "per partition")
	require.Equal(t, 5*time.Second, w.restartDelay(0, due.Add(restartQuiet-time.Millisecond)))
	due = due.Add(restartQuiet - time.Millisecond + 5*time.Second)
	require.Zero(t, w.restartDelay(0, due.Add(restartQuiet)), "forgotten after a quiet period")
}

// restarted waits for old's restart (takenOver) and returns the partition
// that replaced it, once it has its seek.
func restarted(t *testing.T, w *Worker, old *partition) *partition {
	t.Helper()
	var p *partition
	require.Eventually(t, func() bool { p = owned(w, old.id); return p != old && p.seek.Load() != nil },
		10*time.Second, 5*time.Millisecond, "partition %d is restarted", old.id)
	require.NoError(t, p.ctx.Err())
	return p
}

// The stall a failover could leave. The replica that lost the partition,
// stalled past its session, applied what it had queued as it woke: records
// 0..2 before this worker's first batch, which finds them applied and writes
// nothing, then 3..4, which this worker's next batch finds applied. Only
// Kafka knows which replica owns the partition, and it assigns it here: the
// partition is not stopped for good but restarted from the stored offset
// (its records polled before are dropped, the client is to fetch from there),
// and the records from there are applied once.
func TestMovedPartitionRestarts(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p := own(w, 0)
	_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 3)`,
		topics.DefaultNames().Commands)
	require.NoError(t, err)
	apply(w, seg(t, p, 0, "a", "b", "c"))
	require.EqualValues(t, 3, p.expected, "found applied")
	_, err = st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 5 WHERE partition = 0`)
	require.NoError(t, err)

	apply(w, seg(t, p, 3, "d", "e", "f"))
	require.Error(t, p.ctx.Err(), "this run of the partition is stopped")
	again := restarted(t, w, p)
	require.Equal(t, &store.Position{Next: 5, Epoch: -1}, again.seek.Load(), "to be fetched from the stored offset")
	require.True(t, again.losing, "what is polled before that is dropped")
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name IN ('d', 'e', 'f')`).Scan(&n))
	require.Zero(t, n)

	apply(w, seg(t, again, 5, "f", "g"))
	require.EqualValues(t, 7, storedOffset(t, st, 0))
	require.EqualValues(t, 1, acquisitions(t, st, "f"))
}

// A partition the group took away (this worker missed its heartbeats) may
// be another replica's already, applying from the stored offset: the
// records queued for it here are dropped, not applied, and lost does not
// wait for the applier to reach them (here it waits for a row the test
// holds).
func TestLostPartitionDropsItsQueue(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0, p1 := own(w, 0), own(w, 1)
	apply(w, seg(t, p0, 0, "a"), seg(t, p1, 0, "b"))
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT FROM consumer_offsets WHERE partition = 1 FOR UPDATE`)
	require.NoError(t, err)
	q := w.lanes[p0.lane]
	applied := make(chan struct{})
	go func() { defer close(applied); w.applyLoop(w.hard, q) }()
	submit := func(s segment) {
		s.p.pending.Add(1)
		require.True(t, q.submit([]segment{s}))
	}
	submit(seg(t, p1, 1, "c"))
	waitForARowLock(t, st, "the applier waits for partition 1's row")
	submit(seg(t, p0, 1, "d"))

	done := make(chan struct{})
	go func() { defer close(done); w.lost(ctx, w.cl, map[string][]int32{w.cfg.Names.Commands: {0}}) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("lost waits for the applier")
	}
	require.NoError(t, tx.Rollback(ctx))
	<-done
	q.close()
	<-applied
	require.EqualValues(t, 1, storedOffset(t, st, 0), "the lost partition's record is not applied")
	require.EqualValues(t, 2, storedOffset(t, st, 1))
	require.Nil(t, owned(w, 0))
}

// A batch that keeps failing for a reason a retry cannot cure is retried
// with backoff; a partition being revoked is dropped from it, so the
// rebalance does not wait for the cure, and its records stay unapplied for
// the next owner, who starts from the stored offset. A later segment of it
// (polled before the revoke, queued behind the batch) is dropped too, even
// once the failure is cured: applied, it would move the stored offset past
// the dropped records, and the next owner would never apply them.
func TestFailingBatchLetsRevokedPartitionGo(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0 := w.newPartition(w.hard, 0)
	apply(w, seg(t, p0, 0, "a"))
	_, err := st.Pool.Exec(ctx, `ALTER TABLE lock_events RENAME TO lock_events_away`) // every batch now fails
	require.NoError(t, err)

	first, later := seg(t, p0, 1, "b"), seg(t, p0, 2, "c")
	p0.pending.Add(2)
	done := make(chan struct{})
	go func() { defer close(done); w.applySegments(ctx, []segment{first}) }()
	p0.revoke() // as revoked does, before it waits
	<-done      // returns once the failing batch drops the partition
	require.EqualValues(t, 1, storedOffset(t, st, 0), "the record was not applied")

	_, err = st.Pool.Exec(ctx, `ALTER TABLE lock_events_away RENAME TO lock_events`) // cured
	require.NoError(t, err)
	w.applySegments(ctx, []segment{later}) // the applier's next take
	p0.pending.Wait()
	require.EqualValues(t, 1, storedOffset(t, st, 0), "both are left to the next owner")
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name IN ('b', 'c')`).Scan(&n))
	require.Zero(t, n)
}

// A partition revoked while its batch, shared with a partition that is not
// revoked, keeps failing is let go at once: the backoff between attempts
// ends for the revoke (here it would last a minute), and the dropped
// partition's pending count is released when it is dropped, not when the
// rest of the batch finally commits, with that of what was polled for it
// since and queued behind the batch.
func TestRevokeDoesNotWaitForTheRestOfAFailingBatch(t *testing.T) {
	f := failingBatch(t, func(*store.Store, *partition, *partition) {})
	// What was polled for partition 0 since waits in its applier's queue.
	f.p0.pending.Add(1)
	require.True(t, f.w.lanes[f.p0.lane].submit([]segment{seg(t, f.p0, 2, "e")}))
	f.p0.revoke() // as revoked does, before it waits
	f.requireReleased(t, f.p0)
	require.True(t, f.p0.dropped.Load())
	require.NoError(t, f.p1.ctx.Err())
	f.stop()
	require.EqualValues(t, 1, storedOffset(t, f.st, 0))
	require.EqualValues(t, 1, storedOffset(t, f.st, 1))
}

// failing is a batch of partitions 0 and 1 that keeps failing
// (failingBatch): done is closed when applySegments has returned.
type failing struct {
	w      *Worker
	st     *store.Store
	p0, p1 *partition
	cancel context.CancelFunc
	done   chan struct{}
}

// failingBatch applies a batch of partitions 0 and 1 (after a first that
// commits) that keeps failing, retried a minute apart, once before has run
// on the worker, and returns once it has failed.
func failingBatch(t *testing.T, before func(st *store.Store, p0, p1 *partition)) *failing {
	t.Helper()
	ctx := context.Background()
	w, st := newApplier(t)
	logs := &testlog.Buffer{}
	w.log = zerolog.New(logs)
	w.batchRetryBase = time.Minute
	f := &failing{w: w, st: st, p0: own(w, 0), p1: own(w, 1), done: make(chan struct{})}
	apply(w, seg(t, f.p0, 0, "a"), seg(t, f.p1, 0, "b"))
	_, err := st.Pool.Exec(ctx, `ALTER TABLE lock_events RENAME TO lock_events_away`) // every batch now fails
	require.NoError(t, err)
	before(st, f.p0, f.p1)
	actx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	f.cancel = cancel
	f.p0.pending.Add(1)
	f.p1.pending.Add(1)
	go func() {
		defer close(f.done)
		w.applySegments(actx, []segment{seg(t, f.p0, 1, "c"), seg(t, f.p1, 1, "d")})
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "applying batch failed") }, 20*time.Second, 5*time.Millisecond,
		"the batch failed and waits to be retried")
	return f
}

// requireReleased fails unless p's pending segments are released (its
// revoke would not wait) while the batch goes on.
func (f *failing) requireReleased(t *testing.T, p *partition) {
	t.Helper()
	released := make(chan struct{})
	go func() { p.pending.Wait(); close(released) }()
	select {
	case <-released:
	case <-time.After(30 * time.Second):
		t.Fatalf("partition %d is held by the failing batch", p.id)
	}
	select {
	case <-f.done:
		t.Fatal("the batch goes on for partition 1")
	default:
	}
}

// stop ends the batch (the hard stop) and waits for it, and for partition
// 1's pending count.
func (f *failing) stop() {
	f.cancel()
	<-f.done
	f.p1.pending.Wait()
}

// A partition another replica took over, found so in a batch whose other
// partition then keeps failing, is released at once: its revoke (or
// loss), which Kafka sends next, does not wait for the rest of the batch
// to be cured.
func TestTakenOverPartitionDoesNotWaitForTheRestOfAFailingBatch(t *testing.T) {
	f := failingBatch(t, func(st *store.Store, _, _ *partition) {
		// Another worker applied more of partition 0.
		_, err := st.Pool.Exec(context.Background(), `UPDATE consumer_offsets SET next_offset = 5 WHERE partition = 0`)
		require.NoError(t, err)
	})
	require.Error(t, f.p0.ctx.Err(), "partition 0 is stopped")
	f.requireReleased(t, f.p0)
	f.stop()
	require.EqualValues(t, 5, storedOffset(t, f.st, 0))
	require.EqualValues(t, 1, storedOffset(t, f.st, 1))
}

// The segments of a partition stopped before the batch began (restarting
// after a takeover) are released at once, not when the rest of the batch,
// failing, is cured: its revoke does not wait for that.
func TestStoppedPartitionDoesNotWaitForAFailingBatch(t *testing.T) {
	f := failingBatch(t, func(_ *store.Store, p0, _ *partition) {
		p0.cancel() // stopped, as takenOver leaves it until its restart
	})
	f.requireReleased(t, f.p0)
	f.stop()
	require.EqualValues(t, 1, storedOffset(t, f.st, 0), "the stopped partition's record is not applied")
}

// The handlers report what no path should reach (a stale lock state record
// dropped) in the worker's log, with its level, format and instance.
func TestHandlersLogToTheWorkersLog(t *testing.T) {
	w, _ := newApplier(t)
	logs := &testlog.Buffer{}
	w.log = zerolog.New(logs)
	env := w.env(3)
	env.Log.Error().Msg("from the handlers")
	require.Contains(t, logs.String(), "from the handlers")
}

// waitForARowLock waits until a transaction on st waits for another's row
// lock (the applier, for a row a test holds).
func waitForARowLock(t *testing.T, st *store.Store, what string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, st.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted`).Scan(&waiting))
		return waiting > 0
	}, 10*time.Second, 5*time.Millisecond, what)
}
