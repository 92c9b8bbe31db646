package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// TestPeerAcquireSaysHeldOnlyWhenHeld: the original design's acquire is
// "held by another owner" when another owner's row kept it, and only then:
// another failure (here a context cancelled) says what it is.
func TestPeerAcquireSaysHeldOnlyWhenHeld(t *testing.T) {
	testdb.Require(t)
	ctx := context.Background()
	url, drop, err := newSchema(ctx, testdb.URL(), "lockbench_peer_test", false)
	require.NoError(t, err)
	t.Cleanup(drop)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, peerDDL)
	require.NoError(t, err)
	b := &bench{run: "peer-test"}
	cycle := b.peerCycler(pool, 0)

	now := time.Now().UnixMilli()
	_, err = pool.Exec(ctx, `INSERT INTO distributed_locks (lock_id, owner_id, acquired_at, expires_at, lease_duration, heartbeat_at)
		VALUES ($1, 'someone-else', $2::bigint, $2::bigint + 600000, 600, $2::bigint)`, b.rid("peer", 0, 0), now)
	require.NoError(t, err)
	_, _, n, err := cycle(ctx, 0, 0)
	require.ErrorIs(t, err, errPeerHeld)
	require.Zero(t, n)
	require.EqualError(t, err, fmt.Sprintf("acquire %s: held by another owner", b.rid("peer", 0, 0)))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, _, _, err = cycle(cancelled, 1, 0)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, errPeerHeld)
	require.NotContains(t, err.Error(), "held by another owner")
}
