package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/store"
)

// A loss reported while the check of an earlier one runs may come after
// that check asked the broker, so the seek it found may be above the log's
// new end: it is not made, the partition is checked again, and its records
// stay dropped until the second check's seek.
func TestLossDuringCheckIsCheckedAgain(t *testing.T) {
	w, _ := newApplier(t)
	noWake := context.CancelFunc(func() {})
	w.wakePoll.Store(&noWake)
	p := w.newPartition(w.hard, 0)
	w.mu.Lock()
	w.parts[0] = p
	w.mu.Unlock()
	poll := func(losses ...*kgo.ErrDataLoss) ([][]segment, map[int32]kgo.EpochOffset) {
		segs := make([][]segment, len(w.lanes))
		w.mu.Lock()
		defer w.mu.Unlock()
		w.queueLosses(segs, losses)
		return segs, w.seekRewound(segs)
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
