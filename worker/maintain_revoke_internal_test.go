package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// A partition revoked while its periodic cleanup waits for the partition's
// offset row (PostgreSQL slow on the lock) is left alone by that cleanup
// once it gets the row: the revoke does not wait for the cleanup, so the
// partition may be another replica's by then, and its idle rows are the
// next owner's to delete.
func TestCleanupLeavesAPartitionRevokedWhileItWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, st := newApplier(t)
	p := own(w, 0)
	_, err := st.Pool.Exec(ctx, `INSERT INTO locks (lock_name, status, source_partition, updated_at)
		VALUES ('idle', 'released', 0, now() - interval '2 hours')`)
	require.NoError(t, err)

	// The offset row held by another transaction (not ended by
	// idle_in_transaction_session_timeout while the test holds it).
	holder, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(ctx) }()
	_, err = holder.Exec(ctx, `SET LOCAL idle_in_transaction_session_timeout = 0`)
	require.NoError(t, err)
	_, err = store.LockOffset(ctx, holder, w.cfg.Group, w.cfg.Names.Commands, 0)
	require.NoError(t, err)
	var pid int
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))

	done := make(chan error, 1)
	go func() {
		_, err := w.cleanupPartition(ctx, p)
		done <- err
	}()
	require.Eventually(t, func() bool {
		// The cleanup, the one transaction of the partition here: its
		// scheduler has nothing due.
		var waiting int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting))
		return waiting > 0
	}, 10*time.Second, 10*time.Millisecond, "the cleanup waiting for the offset row")

	w.letGo(map[string][]int32{w.cfg.Names.Commands: {0}}, false) // as revoked does
	select {
	case err := <-done:
		t.Fatalf("the cleanup ended (%v) while the row was held", err)
	default: // the revoke returned while the cleanup still waits
	}

	require.NoError(t, holder.Rollback(ctx))
	err = <-done
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name = 'idle'`).Scan(&n))
	require.Equal(t, 1, n, "the idle row is left to the partition's next owner")
	require.ErrorIs(t, err, errLetGo, "the maintain loop goes on to the next partition")
}
