package worker

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// These tests drive the applier directly with records, where the end-to-end
// tests cannot place a failure: between a COMMIT that took effect and its
// answer, and a partition taken over between two batches.

type nopRelay struct{}

func (nopRelay) Run(ctx context.Context, _ int32) error { <-ctx.Done(); return nil }
func (nopRelay) Wake(int32)                             {}

func newApplier(t *testing.T) (*Worker, *store.Store) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(16, topics.DefaultNames().Commands))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	st := testdb.New(t)
	w, err := New(Config{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: st, Relay: nopRelay{}})
	require.NoError(t, err)
	t.Cleanup(w.cl.Close)
	t.Cleanup(w.killHard)
	return w, st
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

func storedOffset(t *testing.T, st *store.Store, p int32) int64 {
	t.Helper()
	offs, err := st.Offsets(context.Background(), "lockworker", topics.DefaultNames().Commands)
	require.NoError(t, err)
	return offs[p]
}

func acquisitions(t *testing.T, st *store.Store, lock string) (n int64) {
	t.Helper()
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT acquisition_count FROM locks WHERE lock_name = $1`, lock).Scan(&n))
	return n
}

// A batch whose COMMIT took effect but whose answer was lost is retried by
// InTx; the offset guard refuses it, and the applier, seeing the offsets
// where the batch put them, takes it as committed instead of stopping the
// partition as taken over.
func TestRetryFindsBatchCommitted(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	segs := []segment{
		{p: p0, records: records(t, 0, 0, "a", "b"), polledAt: time.Now()},
		{p: p1, records: records(t, 1, 0, "c"), polledAt: time.Now()},
	}
	require.True(t, w.applySegments(ctx, segs))
	require.EqualValues(t, 2, storedOffset(t, st, 0))
	require.EqualValues(t, 1, storedOffset(t, st, 1))

	// The retry: the same records, with the offsets expected before them.
	p0.expected, p1.expected = 0, 0
	require.True(t, w.applySegments(ctx, segs))
	require.NoError(t, p0.ctx.Err(), "partition 0 must not be stopped")
	require.NoError(t, p1.ctx.Err(), "partition 1 must not be stopped")
	require.EqualValues(t, 2, p0.expected)
	require.EqualValues(t, 1, p1.expected)
	for _, lock := range []string{"a", "b", "c"} {
		require.EqualValues(t, 1, acquisitions(t, st, lock), "lock %s applied once", lock)
	}

	// The partitions go on from there.
	require.True(t, w.applySegments(ctx, []segment{{p: p0, records: records(t, 0, 2, "d"), polledAt: time.Now()}}))
	require.EqualValues(t, 3, storedOffset(t, st, 0))
}

// A partition whose stored offset moved (another worker applied more of it)
// is stopped without applying its records; the other partitions of the
// batch are applied.
func TestMovedPartitionStopsAlone(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	require.True(t, w.applySegments(ctx, []segment{
		{p: p0, records: records(t, 0, 0, "a"), polledAt: time.Now()},
		{p: p1, records: records(t, 1, 0, "b"), polledAt: time.Now()},
	}))
	// Another worker owns partition 0 now and went further.
	_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 5 WHERE partition = 0`)
	require.NoError(t, err)

	require.True(t, w.applySegments(ctx, []segment{
		{p: p0, records: records(t, 0, 1, "x"), polledAt: time.Now()},
		{p: p1, records: records(t, 1, 1, "y"), polledAt: time.Now()},
	}))
	require.Error(t, p0.ctx.Err(), "partition 0 is stopped")
	require.NoError(t, p1.ctx.Err())
	require.EqualValues(t, 5, storedOffset(t, st, 0), "the other worker's offset stays")
	require.EqualValues(t, 2, storedOffset(t, st, 1))
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name = 'x'`).Scan(&n))
	require.Zero(t, n, "the stopped partition's record is not applied")
	require.EqualValues(t, 1, acquisitions(t, st, "y"))

	// Its records still queued are dropped, not applied.
	require.True(t, w.applySegments(ctx, []segment{{p: p0, records: records(t, 0, 5, "z"), polledAt: time.Now()}}))
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name = 'z'`).Scan(&n))
	require.Zero(t, n)
}
