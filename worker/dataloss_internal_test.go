package worker

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// A loss reported while the check of an earlier one runs may come after
// that check asked the broker, so the seek it found may be above the log's
// new end: it is not made, the partition is checked again, and its records
// stay dropped until the second check's seek.
func TestLossDuringCheckIsCheckedAgain(t *testing.T) {
	w, _ := newApplier(t)
	p := own(w, 0)
	poll := func(losses ...*kgo.ErrDataLoss) ([][]segment, map[int32]kgo.EpochOffset) {
		segs := make([][]segment, len(w.lanes))
		w.mu.Lock()
		defer w.mu.Unlock()
		w.queueLosses(segs, losses)
		seeks, _ := w.seekRewound(segs)
		return segs, seeks
	}
	lossIn := func(segs [][]segment) *kgo.ErrDataLoss {
		require.Len(t, segs[p.lane], 1)
		return segs[p.lane][0].lost
	}

	first, second := &kgo.ErrDataLoss{Partition: 0}, &kgo.ErrDataLoss{Partition: 0}
	segs, seeks := poll(first)
	require.Same(t, first, lossIn(segs))
	require.Nil(t, seeks)

	segs, _ = poll(second) // while the first check runs
	require.Empty(t, segs[p.lane], "one check at a time")

	w.seekTo(p, store.Position{Next: 7, Epoch: 3}) // the first check's answer
	segs, seeks = poll()
	require.Nil(t, seeks, "not made: it may be above where the log ends now")
	require.Same(t, second, lossIn(segs))
	require.True(t, p.losing, "records stay dropped")

	w.seekTo(p, store.Position{Next: 5, Epoch: 4})
	segs, seeks = poll()
	require.Equal(t, map[int32]kgo.EpochOffset{0: {Epoch: 4, Offset: 5}}, seeks)
	require.Empty(t, segs[p.lane])
	require.False(t, p.losing)
	p.pending.Done()
	p.pending.Done()
}

// A revoke ends a check in progress, even one PostgreSQL keeps waiting: the
// rebalance (and so every partition of the group) does not wait for it;
// the next owner checks again.
func TestRevokeEndsLossCheck(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 0)
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, tx.Rollback(ctx)) }()
	_, err = tx.Exec(ctx, `LOCK TABLE consumer_offsets IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	p.pending.Add(1)
	go w.lostRecords(segment{p: p, lost: &kgo.ErrDataLoss{}})
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, st.Pool.QueryRow(ctx,
			`SELECT count(*) FROM pg_locks WHERE relation = 'consumer_offsets'::regclass AND NOT granted`).Scan(&waiting))
		return waiting > 0
	}, 10*time.Second, 5*time.Millisecond, "the check waits for the table")
	p.revoke()
	p.pending.Wait() // as revoked does
}

type lossCount struct {
	noMetrics
	n        atomic.Int32
	restarts atomic.Int32
}

func (m *lossCount) DataLoss()           { m.n.Add(1) }
func (m *lossCount) PartitionRestarted() { m.restarts.Add(1) }

// A Kafka loss whose check finds the stored offset below the one this
// worker committed (PostgreSQL lost transactions too, its fencing token
// sequence with them) is no takeover: the tokens are checked against the
// lock.acquired topic before the partition applies anything again, and
// the partition restarts from the stored offset, not counted as a takeover.
// So too when an earlier attempt's move back lost its answer (the failover
// that lost the transactions may have lost it) and the offset is found
// neither where that move was from nor where it went.
func TestLossFindsStoredOffsetWentBack(t *testing.T) {
	for name, check := range map[string]func(w *Worker, p *partition){
		"no move sent": func(w *Worker, p *partition) {
			p.pending.Add(1)
			w.lostRecords(segment{p: p, lost: &kgo.ErrDataLoss{Partition: 0}})
		},
		"a move whose answer was lost": func(w *Worker, p *partition) {
			sent := &offsetMove{from: 2, to: store.Position{Next: 1, Epoch: -1}}
			require.NoError(t, w.rewindLost(context.Background(), p, &sent))
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, w, st, logs := publishedToken42(t)
			metrics := &lossCount{}
			w.cfg.Metrics = metrics

			p := w.newPartition(w.hard, 0)
			w.mu.Lock()
			w.parts[0] = p // as assigned does, so that the restart is made
			w.mu.Unlock()
			apply(w, seg(t, p, 0, "a", "b"))
			_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 0 WHERE partition = 0`)
			require.NoError(t, err)
			_, err = st.Pool.Exec(ctx, `SELECT setval('fencing_tokens', 1, false)`)
			require.NoError(t, err)

			check(w, p)
			var last int64
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM fencing_tokens`).Scan(&last))
			require.GreaterOrEqual(t, last, int64(42), "the sequence is raised past the token published")
			require.Eventually(t, func() bool { return strings.Contains(logs.String(), "partition restarted") }, 10*time.Second, 5*time.Millisecond)
			require.Contains(t, logs.String(), "stored offset went back")
			require.Contains(t, logs.String(), "partition offset went back: restarting")
			require.NotContains(t, logs.String(), "moved by another replica")
			require.Zero(t, metrics.restarts.Load(), "no takeover counted")
			require.Zero(t, metrics.n.Load(), "nothing moved back: no loss counted")
			require.EqualValues(t, 0, storedOffset(t, st, 0), "the offset is left where PostgreSQL has it")
		})
	}
}

// proxiedWorker is a worker on c, not joining its group (the test drives
// its partitions), whose PostgreSQL is reached through proxy, logging to
// logs; direct reaches the same schema without the proxy. tracer (nil:
// none) is told of the worker's statements.
func proxiedWorker(t *testing.T, c *kfake.Cluster, names topics.Names, metrics Metrics,
	tracer pgx.QueryTracer) (w *Worker, direct *store.Store, proxy *tcpproxy.Proxy, logs *testlog.Buffer) {
	t.Helper()
	sch := testdb.NewSchema(t)
	direct = sch.Open(t, store.Config{MaxConns: 4})
	require.NoError(t, direct.Migrate(context.Background()))
	behind := sch
	behind.URL, proxy = testdb.Proxied(t, sch.URL)
	logs = &testlog.Buffer{}
	// No lock_timeout: the tests make the offsets' move wait (a trigger)
	// on an advisory lock they hold while the proxy hangs or cuts, and a
	// wait it ended would be rolled back unseen by the worker.
	w, err := New(Config{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Names: names, Store: behind.Open(t, store.Config{MaxConns: 4, LockTimeout: -1, Tracer: tracer}),
		Relay: nopRelay{}, Metrics: metrics, Logger: zerolog.New(logs)})
	require.NoError(t, err)
	t.Cleanup(w.cl.Close)
	t.Cleanup(w.killHard)
	return w, direct, proxy, logs
}

// A rewind that committed but whose answer never came (here the server's
// answer is held until the rewind's timeout fires; a connection lost after
// COMMIT is the same) is the worker's own move when the check is retried:
// the stored offset is where it moved it, not a sign of another replica.
// The loss is counted and logged once, and the partition goes on from
// there, instead of being stopped as taken over while Kafka still assigns
// it here.
func TestRewindWhoseAnswerWasLost(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	// The broker refuses the group's session timeout, so the worker's client
	// never joins: the test drives the partition itself, and an assignment
	// would check its log's end (checkLogEnds) and move the offset first.
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands),
		kfake.GroupMinSessionTimeout(time.Hour))
	metrics := &lossCount{}
	w, direct, proxy, logs := proxiedWorker(t, c, names, metrics, nil)
	noWake := context.CancelFunc(func() {})
	w.wakePoll.Store(&noWake)

	p := w.newPartition(w.hard, 0)
	apply(w, seg(t, p, 0, "a", "b", "c"))
	require.EqualValues(t, 3, p.expected)

	// A rewind waits, once it has moved the row, for an advisory lock the
	// test holds.
	_, err := direct.Pool.Exec(ctx, `
		CREATE FUNCTION hold_rewind() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock_shared(4242);
			RETURN NEW;
		END $$;
		CREATE TRIGGER hold_rewind AFTER UPDATE ON consumer_offsets FOR EACH ROW
			WHEN (NEW.next_offset < OLD.next_offset) EXECUTE FUNCTION hold_rewind()`)
	require.NoError(t, err)
	lock, err := direct.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer lock.Release()
	_, err = lock.Exec(ctx, `SELECT pg_advisory_lock(4242)`)
	require.NoError(t, err)

	// The log lost every record (it is empty): the offset moves back to 0.
	p.pending.Add(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.lostRecords(segment{p: p, lost: &kgo.ErrDataLoss{Partition: 0}})
	}()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, direct.Pool.QueryRow(ctx,
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`).Scan(&waiting))
		return waiting > 0
	}, 20*time.Second, 5*time.Millisecond, "the rewind reached the server; logs: %s", logs)
	proxy.Hang() // nothing the server says reaches the worker now
	_, err = lock.Exec(ctx, `SELECT pg_advisory_unlock(4242)`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return storedOffset(t, direct, 0) == 0 }, 20*time.Second, 5*time.Millisecond,
		"the rewind committed")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "checking what the commands topic lost failed") },
		2*moveTimeout, 10*time.Millisecond, "the rewind's answer never came")
	proxy.Restore()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the check did not end")
	}

	require.NoError(t, p.ctx.Err(), "the partition is not taken for another replica's")
	require.EqualValues(t, 0, p.expected)
	require.Equal(t, &store.Position{Next: 0, Epoch: 0}, p.seek.Load(), "the client is to fetch from where the offset moved")
	require.EqualValues(t, 1, metrics.n.Load(), "the loss is counted once")
	require.Equal(t, 1, strings.Count(logs.String(), "the commands topic lost records this group applied"), "and logged once")
	require.NotContains(t, logs.String(), "partition offset moved by another replica")

	// The partition goes on from there.
	apply(w, seg(t, p, 0, "d"))
	require.EqualValues(t, 1, storedOffset(t, direct, 0))
}

// A move whose outcome is unknown stays kept while the offset read is still
// where it is from (its UPDATE may yet commit, queued behind another
// transaction), is reported and dropped once read where it put it, and is
// dropped unreported when read anywhere else (another replica moved it).
func TestLostMoveKeptUntilOffsetLeavesItsFrom(t *testing.T) {
	w, _ := newApplier(t)
	metrics := &lossCount{}
	w.cfg.Metrics = metrics
	m := &offsetMove{from: 10, to: store.Position{Next: 4, Epoch: 2}}

	sent := m
	require.False(t, w.foundMade(0, &sent, store.Position{Next: 10, Epoch: 3}))
	require.Same(t, m, sent, "still at its from: kept")
	require.True(t, w.foundMade(0, &sent, store.Position{Next: 4, Epoch: 2}))
	require.Nil(t, sent, "found made: reported, dropped")
	require.EqualValues(t, 1, metrics.n.Load())

	sent = m
	require.False(t, w.foundMade(0, &sent, store.Position{Next: 12, Epoch: 3}))
	require.Nil(t, sent, "moved elsewhere: dropped")
	require.False(t, w.foundMade(0, &sent, store.Position{Next: 4, Epoch: 2}))
	require.EqualValues(t, 1, metrics.n.Load(), "a move dropped is not reported")
	require.True(t, transient(errMovedBefore), "resuming reads the offset again")
}

type retainedCount struct {
	noMetrics
	n atomic.Int64
}

func (m *retainedCount) CommandsLost(reason string, n int64) {
	if reason == "retention" {
		m.n.Add(n)
	}
}

// A move of a stored offset to the log start (skipRetained) that committed
// but whose answer was lost (here the connection is cut while the UPDATE
// waits, and the server commits it after) is found made when resuming
// retries: the commands retention deleted are logged and counted once,
// rather than not at all, the stored offset being at the log start by then.
func TestRetentionSkipWhoseAnswerWasLost(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands), kfake.GroupMinSessionTimeout(time.Hour))
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	for range 5 {
		require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Topic: names.Commands, Partition: 0, Value: []byte("x")}).FirstErr())
	}
	var to kadm.Offsets
	to.Add(kadm.Offset{Topic: names.Commands, Partition: 0, At: 4})
	deleted, err := kadm.NewClient(prod).DeleteRecords(ctx, to)
	require.NoError(t, err)
	require.NoError(t, deleted.Error())

	metrics := &retainedCount{}
	w, direct, proxy, logs := proxiedWorker(t, c, names, metrics, nil)

	// Stored at 2; the log starts at 4: offsets 2 and 3 were deleted unapplied.
	_, err = direct.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 2)`,
		names.Commands)
	require.NoError(t, err)
	// The move forward waits, once it has moved the row, for an advisory
	// lock the test holds.
	_, err = direct.Pool.Exec(ctx, `
		CREATE FUNCTION hold_skip() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock_shared(4243);
			RETURN NEW;
		END $$;
		CREATE TRIGGER hold_skip AFTER UPDATE ON consumer_offsets FOR EACH ROW
			WHEN (NEW.next_offset > OLD.next_offset) EXECUTE FUNCTION hold_skip()`)
	require.NoError(t, err)
	lock, err := direct.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer lock.Release()
	_, err = lock.Exec(ctx, `SELECT pg_advisory_lock(4243)`)
	require.NoError(t, err)

	type resumed struct {
		offsets map[string]map[int32]kgo.Offset
		err     error
	}
	done := make(chan resumed, 1)
	go func() {
		offsets, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset()}})
		done <- resumed{offsets, err}
	}()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, direct.Pool.QueryRow(ctx,
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4243 AND NOT granted`).Scan(&waiting))
		return waiting > 0
	}, 20*time.Second, 5*time.Millisecond, "the move reached the server; logs: %s", logs)
	proxy.Cut() // the move's answer is lost
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "reading or checking the stored offsets of the assigned partitions failed")
	}, 10*time.Second, 10*time.Millisecond, "the move's answer never came")
	_, err = lock.Exec(ctx, `SELECT pg_advisory_unlock(4243)`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return storedOffset(t, direct, 0) == 4 }, 20*time.Second, 5*time.Millisecond,
		"the move committed")
	proxy.Restore()
	var r resumed
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("resuming did not end")
	}
	require.NoError(t, r.err)
	require.Equal(t, kgo.NewOffset().At(4).WithEpoch(-1), r.offsets[names.Commands][0])
	require.EqualValues(t, 2, metrics.n.Load(), "the two deleted commands are counted, once")
	require.Equal(t, 1, strings.Count(logs.String(), "commands deleted by the topic's retention before any replica applied them"),
		"and logged once: %s", logs)
	require.Contains(t, logs.String(), `"answer_lost":true`)
}

// A partition resumed from stored offset 200; then PostgreSQL lost
// transactions (the offset back to 150, the sequence to its start, while
// token 42 is published), and the Kafka client reported a loss on the
// partition before its first batch (it asks the broker at once, with the
// epoch the partition resumed with). The loss's check compares the stored
// offset with where the partition resumed, as that first batch would:
// the tokens are checked, and the partition restarts from 150, granting
// above 42. Comparing only with the offset expected after a batch, unknown
// yet, it skipped the check and set that offset to 150, so that the first
// batch did not compare either.
func TestLossBeforeTheFirstBatchComparesWithWhereItResumed(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	_, w, st, logs := withCommands(t) // the log holds every record applied
	_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 200)`, names.Commands)
	require.NoError(t, err)
	p := own(w, 0)
	stored, err := st.Offsets(ctx, "lockworker", names.Commands)
	require.NoError(t, err)
	w.knowResumed(map[int32]kgo.Offset{0: kgo.NewOffset()}, stored, nil) // as resumeFromStore does

	_, err = st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 150 WHERE partition = 0`) // the loss
	require.NoError(t, err)
	p.pending.Add(1)
	w.lostRecords(segment{p: p, lost: &kgo.ErrDataLoss{Partition: 0}})

	require.Contains(t, logs.String(), "stored offset went back")
	require.Contains(t, logs.String(), `"expected_offset":200`)
	again := restarted(t, w, p)
	require.EqualValues(t, 150, again.seek.Load().Next, "fetched again from the stored offset")
	apply(w, seg(t, again, 150, "l"))
	require.Greater(t, tokenOf(t, st, "l"), int64(42), "granted above the token published")
}
