package main

import (
	"context"
	"encoding/json"
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

// TestPeerOriginalHasNoWorkerCPU: the original design's runs (its rounds
// and its one client) have no worker's or broker's CPU (nor worker
// batches), lockworker's idle beside them, in the JSON: PostgreSQL's and lockbench's own process (the
// original's clients) are what they use; lockworker's rounds keep theirs.
func TestPeerOriginalHasNoWorkerCPU(t *testing.T) {
	rep, _ := runFlags(t, "--scenario", "peer", "--broker-memory", "--quick", "--sdk=false",
		"--clients", "4", "--duration", "1s", "--warmup", "300ms")
	require.NotNil(t, rep.Peer)
	require.Len(t, rep.Peer.Rounds, 1)
	r := rep.Peer.Rounds[0]
	require.NotNil(t, r.Lockworker.CPU.WorkerCPU)
	require.NotNil(t, r.Lockworker.WorkerCPUPer)
	for _, o := range []ThroughputResult{r.Original, rep.Peer.Light} {
		require.Positive(t, o.Commands, o.Via)
		b, err := json.Marshal(o)
		require.NoError(t, err)
		for _, field := range []string{`"worker_cpu_seconds"`, `"worker_cpu_seconds_per_1000_commands"`, `"broker_cpu_seconds"`, `"worker_batches"`} {
			require.NotContains(t, string(b), field, o.Via)
		}
		require.Contains(t, string(b), `"lockbench_process_cpu_seconds"`, o.Via)
		require.Equal(t, rep.PostgresCPUMeasured, o.CPU.PostgresCPU != nil, o.Via)
		require.Equal(t, rep.PostgresCPUMeasured, o.PGCPUPer != nil, o.Via)
	}
}
