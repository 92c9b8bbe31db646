package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// handoffWorker is a worker whose relay runs partition mine, with the poll
// an hour away, and published(n) the values of topic's first n records.
func handoffWorker(t *testing.T, topic string, mine int32) (w *Worker, st *store.Store, published func(n int) []string) {
	t.Helper()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, topic))
	st = testdb.New(t)
	kopts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 10*time.Second, "", false, -1)
	require.NoError(t, err)
	t.Cleanup(pubClient.Close)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour})
	require.NoError(t, err)
	w, err = New(Config{KafkaOpts: kopts, Store: st, Relay: relay})
	require.NoError(t, err)
	t.Cleanup(w.cl.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(ctx, mine) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { s := relay.Reserve(mine); s.Dirty(); return s != nil }, 10*time.Second, time.Millisecond)

	cons, err := kgo.NewClient(append(kopts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	t.Cleanup(cons.Close)
	var got []string
	return w, st, func(n int) []string {
		t.Helper()
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		for len(got) < n && pctx.Err() == nil {
			for _, r := range cons.PollFetches(pctx).Records() {
				got = append(got, string(r.Value))
			}
		}
		require.Len(t, got, n)
		return got
	}
}

// writeFor commits value for partition through w.writeTx.
func writeFor(t *testing.T, w *Worker, topic string, partition int32, value string) {
	t.Helper()
	require.NoError(t, w.writeTx(context.Background(), w.cfg.Store.InTx, func(tx pgx.Tx) (*handlers.Batch, error) {
		b := handlers.NewBatch(tx, w.env(partition))
		b.Publish(topic, []byte("k"), []byte(value), []topics.Header{{Key: "h", Value: []byte("v")}})
		return b, nil
	}))
}

// TestHandoffMarks: a transaction writing for a partition no relay of this
// process runs leaves a mark, and a transaction that finds another
// replica's mark on its partition has the relay read the table, so the
// other replica's rows go out before its own (which the relay would
// otherwise publish from memory at once, and the other's only at the next
// poll: an hour here). Last, an attempt whose COMMIT went unanswered has
// the relay read the table.
func TestHandoffMarks(t *testing.T) {
	const topic, mine, theirs = "locks.lock.acquired.v1", int32(1), int32(2)
	ctx := context.Background()
	w, st, published := handoffWorker(t, topic, mine)
	write := func(partition int32, value string) { writeFor(t, w, topic, partition, value) }
	marks := func(p int32) int {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox_marks WHERE source_partition = $1`, p).Scan(&n))
		return n
	}

	write(mine, "first")
	assert.Equal(t, []string{"first"}, published(1))
	assert.Zero(t, marks(mine), "a partition run here gets no mark")

	write(theirs, "for-the-owner")
	assert.Equal(t, 1, marks(theirs), "a partition run elsewhere gets a mark")

	// Another replica's row for our partition, with its mark.
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES ($1, $2, 'k', 'foreign', '')`, mine, topic)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox_marks (source_partition) VALUES ($1)`, mine)
	require.NoError(t, err)
	write(mine, "after")
	assert.Equal(t, []string{"first", "foreign", "after"}, published(3))
	// Waited for: asserted at once, the mark was still there in 2 runs of
	// 15 (the session's start too), with the rows in this order.
	assert.Eventually(t, func() bool { return marks(mine) == 0 }, 10*time.Second, 10*time.Millisecond, "a read takes the mark")

	// Two attempts of one transaction: the first's COMMIT took effect
	// without an answer, and the retry, finding its records applied, had
	// nothing to write and reserved nothing. The first attempt's slot,
	// abandoned as the retry starts, must have the relay read the table,
	// not take the retry's (empty) rows.
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES ($1, $2, 'k', 'committed-unanswered', '')`, mine, topic)
	require.NoError(t, err)
	b := &pgx.Batch{}
	first := w.reserve([]outbox.Row{{Partition: mine}}, b)
	first.abandon()
	assert.Equal(t, []string{"first", "foreign", "after", "committed-unanswered"}, published(4))
}

// TestRetryDoesNotHoldTheQueue: an attempt that failed at COMMIT, after
// taking its slot, does not hold back the slots taken after it while its
// transaction is retried: the retry abandons it as it starts, and another
// transaction's rows go out without waiting for the retry to end (or for
// the poll, an hour here).
func TestRetryDoesNotHoldTheQueue(t *testing.T) {
	const topic, mine = "locks.lock.acquired.v1", int32(1)
	ctx := context.Background()
	w, st, published := handoffWorker(t, topic, mine)
	writeFor(t, w, topic, mine, "first")
	assert.Equal(t, []string{"first"}, published(1))
	// The relay's reads after its start end (they would read the table
	// for the other transaction below anyway): the transactions in flight
	// now end, and then a pass reads.
	var xmax int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8`).Scan(&xmax))
	require.Eventually(t, func() bool {
		var ended bool
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 >= $1`, xmax).Scan(&ended))
		return ended
	}, 30*time.Second, 5*time.Millisecond)
	writeFor(t, w, topic, mine, "second")
	assert.Equal(t, []string{"first", "second"}, published(2))

	// The first attempt's outbox row fails it in the batch that goes with
	// COMMIT (after its slot was taken), as a deadlock would; the second
	// waits for the test.
	_, err := st.Pool.Exec(ctx, `
		CREATE SEQUENCE fail_once;
		CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.value = 'retried' AND nextval('fail_once') = 1 THEN
				RAISE EXCEPTION 'injected' USING ERRCODE = '40P01';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fail_once BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_once();`)
	require.NoError(t, err)
	attempts := 0
	retrying, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // the retry holds a connection, which closing the store waits for
	go func() {
		done <- w.writeTx(ctx, w.cfg.Store.InTx, func(tx pgx.Tx) (*handlers.Batch, error) {
			if attempts++; attempts == 2 {
				close(retrying)
				<-release
			}
			b := handlers.NewBatch(tx, w.env(mine))
			b.Publish(topic, []byte("k"), []byte("retried"), []topics.Header{{Key: "h", Value: []byte("v")}})
			return b, nil
		})
	}()
	select {
	case <-retrying:
	case err := <-done:
		t.Fatalf("the transaction was not retried: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the transaction was not retried")
	}

	writeFor(t, w, topic, mine, "other")
	assert.Equal(t, []string{"first", "second", "other"}, published(3), "not held back by the retry")
	releaseOnce()
	require.NoError(t, <-done)
	assert.Equal(t, []string{"first", "second", "other", "retried"}, published(4))
	assert.Equal(t, 2, attempts)
}
