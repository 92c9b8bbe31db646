package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// A skip queued (the client stopped at the batch until the skip commits)
// whose partition is restarted before the skip commits (another replica
// applied exactly the records before the batch): the restart's seek to the
// stored offset is where the client stands, which kgo does not make, so
// the partition is marked refetch when the skip is queued; else it was
// fetched no further, for ever, and nothing said so.
func TestRestartWhileSkipQueuedGoesOn(t *testing.T) {
	ctx := context.Background()
	c := kafkatest.Cluster(t)
	m := &skipMetrics{dead: map[string]int{}}
	w, st := runOneCommandsPartition(t, c, m, kgo.MaxDecompressBatchBytes(16<<10))
	plain, gzipped := producers(t, c)
	reply := "locks.replies.restart-skip"
	first := produce(t, plain, acquire(t, "first", reply))
	require.Eventually(t, func() bool { return storedOffset(t, st, 0) == first[0]+1 }, 30*time.Second, 10*time.Millisecond)

	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT FROM consumer_offsets WHERE partition = 0 FOR UPDATE`)
	require.NoError(t, err)
	before := produce(t, plain, acquire(t, "before", reply))
	waitForARowLock(t, st, "the applier waits for the partition's row with the record before the batch")
	bomb := produce(t, gzipped, zeros(20<<10), zeros(20<<10))
	require.Equal(t, before[0]+1, bomb[0])
	after := produce(t, plain, acquire(t, "after", reply))

	q := w.lanes[0]
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		for _, s := range q.pending {
			if s.tooLarge != nil && s.tooLarge.Offset == bomb[0] {
				return true
			}
		}
		return false
	}, 30*time.Second, 5*time.Millisecond, "the skip queued")

	// Another replica (a stale owner) applies the record before the batch,
	// and only it: the stored offset moves past it, keeping its epoch.
	_, err = tx.Exec(ctx, `UPDATE consumer_offsets SET next_offset = $1, leader_epoch_offset = $1 WHERE partition = 0`, before[0]+1)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	require.Eventually(t, func() bool { _, r := m.counts(); return r == 1 }, 10*time.Second, 5*time.Millisecond, "taken for moved")
	t.Logf("restarted; stored %d, bomb at %d..%d, after at %d", storedOffset(t, st, 0), bomb[0], bomb[1], after[0])
	require.Eventually(t, func() bool { return storedOffset(t, st, 0) == after[0]+1 }, 20*time.Second, 20*time.Millisecond,
		"the batch is skipped and the command after it applied")
}
