package worker

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// tally is Metrics counting what it is told, durations left out.
type tally struct {
	noMetrics
	mu     sync.Mutex
	counts map[string]int
}

func (m *tally) add(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[key]++
}

func (m *tally) Batch(records int, _ time.Duration) {
	m.add("batch")
	for range records {
		m.add("batch record")
	}
}

func (m *tally) Command(operation, result string, _ time.Duration) {
	m.add("command " + operation + " " + result)
}

func (m *tally) Events(requestID string, evs []topics.Event) {
	for _, ev := range evs {
		m.add("event " + requestID + " " + ev.Type)
	}
}

func (m *tally) DeadLettered(reason string) { m.add("dead-lettered " + reason) }

func (m *tally) snapshot() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.counts {
		out[k] = v
	}
	return out
}

// commitFate is what becomes of a batch's COMMIT in runBatch.
type commitFate int

const (
	commitAnswered commitFate = iota
	commitLost                // it takes effect, its answer lost
	// commitLostRolledBack: its answer lost, it is rolled back, and another
	// replica moves the offset where it would have (a zombie's batch of
	// the same records).
	commitLostRolledBack
	// commitLostUnasked: its answer lost, it takes effect, and the retry's
	// question whether it did (store.AnyCommitted) fails, its connection
	// cut too.
	commitLostUnasked
)

// xactAsks counts, as the worker's pool's tracer, the statements asking
// PostgreSQL whether an attempt committed (store.AnyCommitted). With fail,
// the proxy is cut as the first is sent, and restored once it failed.
type xactAsks struct {
	mu    sync.Mutex
	n     int
	fail  bool
	proxy *tcpproxy.Proxy
}

type cutKey struct{}

func (a *xactAsks) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(d.SQL, "pg_xact_status") {
		return ctx
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if !a.fail || a.n > 1 {
		return ctx
	}
	a.proxy.Cut()
	return context.WithValue(ctx, cutKey{}, true)
}

func (a *xactAsks) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(cutKey{}) != nil {
		a.proxy.Restore()
	}
}

func (a *xactAsks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// A batch whose COMMIT took effect but whose answer was lost is reported
// as one answered is, once, when the retry finds it committed: its
// commands, events and dead-lettered records counted, the invalid command
// and the skipped batch logged. Both ways a retry finds it: a batch whose
// partition's offset is known fails its offset guard (settleMoved); a
// partition's first batch finds every record applied. One whose COMMIT
// was lost and did not take effect is not reported, though the stored
// offset is where it would have put it.
func TestLostCommitIsReported(t *testing.T) {
	for _, known := range []bool{true, false} {
		name := "first batch"
		if known {
			name = "offset known"
		}
		t.Run(name, func(t *testing.T) {
			want := runBatch(t, known, commitAnswered)
			require.Equal(t, 1, want.counts["dead-lettered INVALID_REQUEST"], "the batch's invalid command is counted")
			require.Equal(t, 1, want.counts["dead-lettered "+DeadLetterBatchTooLarge], "the batch's skipped batch is counted")
			got := runBatch(t, known, commitLost)
			require.Equal(t, want.counts, got.counts, "counted as when answered")
			require.Contains(t, got.logs, "batch found committed on retry")
			for _, logs := range []string{want.logs, got.logs} {
				require.Equal(t, 1, strings.Count(logs, "invalid command: answered with its error code"), "logged once: %s", logs)
				require.Equal(t, 1, strings.Count(logs, "skipped a record batch of the commands topic"), "logged once: %s", logs)
			}
			require.NoError(t, got.p.ctx.Err(), "the partition is not restarted")
			require.EqualValues(t, got.p.expected, batchEnd(known))

			got = runBatch(t, known, commitLostRolledBack)
			before := map[string]int{}
			if known {
				before = map[string]int{"batch": 1, "batch record": 1, "command acquire ok": 1, "event r-0-0 lock.acquired": 1}
				require.Error(t, got.p.ctx.Err(), "the partition is restarted, as moved by another replica")
			} else {
				require.EqualValues(t, got.p.expected, batchEnd(known), "the partition goes on from the stored offset")
			}
			require.Equal(t, before, got.counts, "the batch is not counted")
			require.NotContains(t, got.logs, "batch found committed on retry")
			require.NotContains(t, got.logs, "invalid command: answered with its error code")
			require.NotContains(t, got.logs, "skipped a record batch of the commands topic")
		})
	}
}

// A partition's first batch that finds all of it applied after its
// COMMIT's answer was lost is done even when PostgreSQL cannot say whether
// its attempt committed (the connection lost again): its offset is right
// either way, only the report is missing, said in a warning. It is not
// failed and backed off (the applier's other partitions waiting behind),
// nor asked about again.
func TestLostCommitUnaskedIsDone(t *testing.T) {
	got := runBatch(t, false, commitLostUnasked)
	require.NotContains(t, got.logs, "applying batch failed")
	require.Equal(t, 1, got.asks, "asked once")
	require.Contains(t, got.logs, "its commands' metrics and dead-letter warnings are missing")
	require.Empty(t, got.counts, "what the attempt did is not known: not counted")
	require.NoError(t, got.p.ctx.Err(), "the partition is not restarted")
	require.EqualValues(t, batchEnd(false), got.p.expected)
}

// batchEnd is where runBatch's batch moves its partition's offset.
func batchEnd(known bool) int64 {
	if known {
		return 6
	}
	return 5
}

// batchRun is what runBatch saw.
type batchRun struct {
	counts map[string]int // what the worker's Metrics were told
	logs   string
	p      *partition
	asks   int // whether an attempt committed (xactAsks)
}

// runBatch applies, on a worker of its own, a batch of two acquires, an
// invalid command and a skipped batch (after a batch of one acquire that
// makes its partition's offset known, when known). Unless fate is
// commitAnswered, the batch's COMMIT is held at the server (a deferred
// trigger waits for an advisory lock the test holds) while the connection
// is cut: its answer is lost. Then the COMMIT is let through (commitLost,
// commitLostUnasked), or its backend terminated and the offset moved to
// the batch's end by another (commitLostRolledBack).
func runBatch(t *testing.T, known bool, fate commitFate) batchRun {
	ctx := context.Background()
	m := &tally{counts: map[string]int{}}
	asks := &xactAsks{fail: fate == commitLostUnasked}
	w, direct, proxy, logs := proxiedWorker(t, kafkatest.Cluster(t), topics.DefaultNames(), m, asks)
	asks.proxy = proxy
	noWake := context.CancelFunc(func() {}) // no poll loop to wake (seekTo)
	w.wakePoll.Store(&noWake)
	p := w.newPartition(w.hard, 0)
	from := int64(0)
	if known {
		apply(w, seg(t, p, 0, "before"))
		from = 1
	}
	_, err := direct.Pool.Exec(ctx, `
		CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock_shared(4244);
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER hold_commit AFTER UPDATE ON consumer_offsets DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.next_offset > OLD.next_offset) EXECUTE FUNCTION hold_commit()`)
	require.NoError(t, err)
	lock, err := direct.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer lock.Release()
	if fate != commitAnswered {
		_, err = lock.Exec(ctx, `SELECT pg_advisory_lock(4244)`)
		require.NoError(t, err)
	}

	end := batchEnd(known)
	invalid := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: from + 2, Value: []byte("not a command")}
	skip := &kgo.ErrDecompressTooLarge{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: from + 3, NextOffset: end}
	cmds := seg(t, p, from, "a", "b")
	cmds.records = append(cmds.records, invalid)
	done := make(chan struct{})
	go func() {
		defer close(done)
		apply(w, cmds, segment{p: p, tooLarge: skip, polledAt: time.Now()})
	}()
	if fate != commitAnswered {
		var pid int
		require.Eventually(t, func() bool {
			err := direct.Pool.QueryRow(ctx,
				`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 4244 AND NOT granted`).Scan(&pid)
			return err == nil
		}, 20*time.Second, 5*time.Millisecond, "the COMMIT reached the server; logs: %s", logs)
		proxy.Cut() // the COMMIT's answer is lost
		if fate == commitLostRolledBack {
			_, err = direct.Pool.Exec(ctx, `SELECT pg_terminate_backend($1, 20000)`, pid)
			require.NoError(t, err)
		}
		_, err = lock.Exec(ctx, `SELECT pg_advisory_unlock(4244)`)
		require.NoError(t, err)
		if fate == commitLostRolledBack {
			_, err = direct.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, $2)
				ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = $2`, topics.DefaultNames().Commands, end)
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool { return storedOffset(t, direct, 0) == end }, 20*time.Second, 5*time.Millisecond,
			"the COMMIT took effect, or another replica moved the offset")
		proxy.Restore()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the batch was not settled; logs: %s", testlog.LastLines(logs.String(), 20))
	}
	require.EqualValues(t, end, storedOffset(t, direct, 0))
	var applied int
	require.NoError(t, direct.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name IN ('a', 'b') AND acquisition_count = 1`).Scan(&applied))
	if fate == commitLostRolledBack {
		require.Zero(t, applied, "not applied by this worker")
	} else {
		require.Equal(t, 2, applied, "each applied once")
	}
	return batchRun{counts: m.snapshot(), logs: logs.String(), p: p, asks: asks.count()}
}

// A batch whose attempt PostgreSQL says did not commit (its COMMIT
// refused here) while another replica moved a partition's offset restarts
// that partition and retries the rest; a first batch among them, all of
// it found applied by then, is not asked about again: what did not commit
// never will.
func TestNotCommittedIsAskedOnce(t *testing.T) {
	ctx := context.Background()
	asks := &xactAsks{}
	names := topics.DefaultNames()
	w, direct, _, _ := proxiedWorker(t, kafkatest.Cluster(t), names, noMetrics{}, asks)
	noWake := context.CancelFunc(func() {}) // no poll loop to wake (seekTo)
	w.wakePoll.Store(&noWake)
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	apply(w, seg(t, p0, 0, "first0")) // p0's offset known; p1's first batch is below
	_, err := direct.Pool.Exec(ctx, `
		CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'COMMIT refused';
		END $$;
		CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON consumer_offsets DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION refuse_commit()`)
	require.NoError(t, err)
	parts := group([]segment{seg(t, p0, 1, "a"), seg(t, p1, 0, "b")})
	var sent *sentAttempt
	_, err = w.applyTx(ctx, parts, &sent, nil, false)
	require.ErrorContains(t, err, "COMMIT refused")
	require.NotNil(t, sent, "its COMMIT went with writes")

	// Another replica applies both partitions' records meanwhile.
	_, err = direct.Pool.Exec(ctx, `DROP TRIGGER refuse_commit ON consumer_offsets`)
	require.NoError(t, err)
	_, err = direct.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
		VALUES ('lockworker', $1, 0, 2), ('lockworker', $1, 1, 1)
		ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset`, names.Commands)
	require.NoError(t, err)

	_, err = w.applyTx(ctx, parts, &sent, nil, false)
	var moved *store.OffsetMovedError
	require.ErrorAs(t, err, &moved)
	require.EqualValues(t, 0, moved.Partition)
	rest, err := w.settleMoved(ctx, parts, moved, &sent, time.Now())
	require.NoError(t, err)
	require.Equal(t, []*part{parts[1]}, rest, "partition 0 restarted, partition 1 retried")
	require.Equal(t, 1, asks.count())

	results, err := w.applyTx(ctx, rest, &sent, nil, false)
	require.NoError(t, err)
	require.Empty(t, results, "nothing applied here")
	require.EqualValues(t, 1, rest[0].next)
	require.Equal(t, 1, asks.count(), "not asked again")
}

// A batch found committed on retry wakes its partitions' expiry
// schedulers (committed) for the leases and waits its committed attempt
// started, as its answer would have: the retry stops before apply, which
// computes them. Both ways a retry finds it (TestLostCommitIsReported).
func TestFoundCommittedKeepsDue(t *testing.T) {
	for _, known := range []bool{true, false} {
		name := "first batch"
		if known {
			name = "offset known"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			w, _ := newApplier(t)
			p := w.newPartition(w.hard, 0)
			from := int64(0)
			if known {
				apply(w, seg(t, p, 0, "before"))
				from = 1
			}
			parts := group([]segment{seg(t, p, from, "a")})
			var sent *sentAttempt
			_, err := w.applyTx(ctx, parts, &sent, nil, false) // commits; suppose its answer was lost
			require.NoError(t, err)
			due := parts[0].due
			require.False(t, due.IsZero(), "the acquire's lease ends")

			results, err := w.applyTx(ctx, parts, &sent, nil, false) // InTx's retry
			if known {
				var moved *store.OffsetMovedError
				require.ErrorAs(t, err, &moved)
				rest, err := w.settleMoved(ctx, parts, moved, &sent, time.Now())
				require.NoError(t, err)
				require.Empty(t, rest)
			} else {
				require.NoError(t, err)
				require.Len(t, results, 1, "found committed")
			}
			require.Equal(t, due, parts[0].due, "the scheduler is woken for the lease the attempt granted")
		})
	}
}

// A partition's first batch found applied on retry, PostgreSQL not saying
// whether its earlier attempt committed (TestLostCommitUnaskedIsDone),
// still wakes the partition's expiry scheduler for the lease that attempt
// granted, in case it did (early at worst): a lease ending before the
// scheduler's next periodic look ends when due, not up to maxExpirySleep
// late.
func TestLostCommitUnaskedKeepsDue(t *testing.T) {
	ctx := context.Background()
	asks := &xactAsks{fail: true}
	w, _, proxy, logs := proxiedWorker(t, kafkatest.Cluster(t), topics.DefaultNames(), noMetrics{}, asks)
	asks.proxy = proxy
	// Its scheduler not run, so that the test sees its wake (p.wake).
	p := &partition{w: w, id: 0, ctx: ctx, wake: make(chan struct{}, 1), expected: unknownOffset}
	p.resumed.Store(unknownOffset)
	v, err := topics.Command{RequestID: "short", Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", LeaseDuration: 0.5}.Encode()
	require.NoError(t, err)
	rec := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: 0, Key: []byte("a"), Value: v}
	parts := group([]segment{{p: p, records: []*kgo.Record{rec}, polledAt: time.Now()}})
	var sent *sentAttempt
	_, err = w.applyTx(ctx, parts, &sent, nil, false) // commits; suppose its answer was lost
	require.NoError(t, err)
	due := parts[0].due
	require.False(t, due.IsZero(), "the acquire's lease ends")

	results, err := w.applyTx(ctx, parts, &sent, nil, false) // InTx's retry: found applied, the question fails
	require.NoError(t, err)
	require.Empty(t, results)
	require.Equal(t, 1, asks.count())
	require.Contains(t, logs.String(), "PostgreSQL could not say whether")
	p.sleepsUntil.Store(time.Now().Add(maxExpirySleep).UnixNano()) // asleep until its next periodic look
	w.committed(parts, results, 0)
	require.Len(t, p.wake, 1, "the scheduler is woken for the lease, which ends before its next look")
	require.Equal(t, due, parts[0].due, "for the lease the attempt granted")
}
