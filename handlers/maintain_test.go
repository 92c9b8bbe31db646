package handlers_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// TestCleanupIdle: the periodic cleanup of a partition ends its ended leases
// and deletes its idle rows, and leaves other partitions' rows alone.
func TestCleanupIdle(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("short", "alice", lease(0.1)))
	h.one(h.acquire("idle", "bob"))
	require.Equal(t, topics.TypeReleased, h.one(h.release("idle", "bob")).Type)
	h.env.Partition = 7
	h.one(h.acquire("elsewhere", "carol"))
	h.one(h.release("elsewhere", "carol"))
	h.env.Partition = 0
	h.waitPast(acq.LockInfo.ExpiresAt.Time)
	h.clearOutbox()

	var n int
	require.NoError(t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, h.env)
		var err error
		if n, _, _, err = b.CleanupIdle(context.Background(), 0); err != nil {
			return err
		}
		return b.Flush(context.Background())
	}))
	require.Equal(t, 2, n, "short ended and deleted once, idle deleted")
	require.Equal(t, []string{"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired"}, h.routes())
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM locks`), "the other partition's idle row stays")
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM locks WHERE lock_name = 'elsewhere'`))
}
