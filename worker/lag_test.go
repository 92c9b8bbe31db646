package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/omninode/lockworker/internal/e2e"
)

// TestLagWithoutDatabase: with the worker's database pool closed, Lag still
// answers, from the stored offsets its last successful call read, and its
// lag grows with the commands produced since.
func TestLagWithoutDatabase(t *testing.T) {
	e := e2e.New(t)
	x := e.StartWorker(e2e.WorkerOpts{Name: "lagged"})
	p := e.Producer()
	ctx := context.Background()
	total := func() (int64, int) {
		lag, err := x.W.Lag(ctx)
		require.NoError(t, err)
		var sum int64
		for _, n := range lag {
			sum += n
		}
		return sum, len(lag)
	}

	const before, during = 10, 25
	for i := range before {
		e.Send(p, cmd("query", fmt.Sprintf("lag-a%d", i), fmt.Sprintf("lag-%d", i), "", "locks.replies.lag"))
	}
	// Applied, and read by a successful Lag, which the fallback remembers.
	require.Eventually(t, func() bool { n, _ := total(); return n == 0 }, time.Minute, 20*time.Millisecond)
	_, owned := total()
	require.Equal(t, len(x.W.Partitions()), owned)

	x.Store.Pool.Close() // PostgreSQL unreachable for this worker: nothing more is applied
	defer x.Kill()       // a drain would retry the failing batch until the pool came back
	_, err := x.Store.Offsets(ctx, e.Group, e.Names.Commands)
	require.Error(t, err, "the stored offsets cannot be read")
	for i := range during {
		e.Send(p, cmd("query", fmt.Sprintf("lag-b%d", i), fmt.Sprintf("lag-%d", i), "", "locks.replies.lag"))
	}
	var sum int64
	require.Eventually(t, func() bool { sum, owned = total(); return sum == during }, 10*time.Second, 20*time.Millisecond,
		"the lag counts the commands produced since the pool closed")
	require.Equal(t, len(x.W.Partitions()), owned, "every owned partition is reported")
}

// TestGroupOffsetsCommittedAtStop: a worker that stops (drains and leaves)
// leaves the group's Kafka offsets at what it applied, for lag tooling
// (kafka-consumer-groups), as the stored offsets are: kgo commits nothing
// of a revoke by itself, and its autocommit, every 5 s, would have left
// the last seconds' marks uncommitted for good.
func TestGroupOffsetsCommittedAtStop(t *testing.T) {
	e := e2e.New(t)
	x := e.StartWorker(e2e.WorkerOpts{Name: "committed"})
	p := e.Producer()
	ctx := context.Background()
	const n = 40
	for i := range n {
		e.Send(p, cmd("query", fmt.Sprintf("commit-%d", i), fmt.Sprintf("commit-%d", i), "", "locks.replies.commit"))
	}
	require.Eventually(t, func() bool {
		lag, err := x.W.Lag(ctx)
		require.NoError(t, err)
		var sum int64
		for _, l := range lag {
			sum += l
		}
		return sum == 0
	}, time.Minute, 10*time.Millisecond, "applied")
	x.Stop()

	adm := kadm.NewClient(e.Producer())
	ends, err := adm.ListEndOffsets(ctx, e.Names.Commands)
	require.NoError(t, err)
	committed, err := adm.FetchOffsets(ctx, e.Group)
	require.NoError(t, err)
	ends.Each(func(o kadm.ListedOffset) {
		c, _ := committed.Lookup(e.Names.Commands, o.Partition)
		require.Equal(t, o.Offset, c.At, "partition %d: the group's offset lags what was applied", o.Partition)
	})
}

// TestLagHeld: LagHeld runs its read of PostgreSQL's stored offsets, and
// nothing else, through hold (the HTTP side's bound on the pool, which
// Kafka's round trips must not occupy), answering as Lag does; a hold that
// gives no turn is as PostgreSQL not answering: the stored offsets the
// worker knows stand in.
func TestLagHeld(t *testing.T) {
	e := e2e.New(t)
	x := e.StartWorker(e2e.WorkerOpts{Name: "held"})
	ctx := context.Background()
	require.Eventually(t, func() bool { return len(x.W.Partitions()) > 0 }, time.Minute, 20*time.Millisecond)
	owned := len(x.W.Partitions())

	holds := 0
	lag, err := x.W.LagHeld(ctx, func(ctx context.Context, read func(context.Context) error) error {
		holds++
		return read(ctx)
	})
	require.NoError(t, err)
	require.Equal(t, 1, holds, "one read of PostgreSQL")
	require.Len(t, lag, owned)

	lag, err = x.W.LagHeld(ctx, func(context.Context, func(context.Context) error) error {
		return fmt.Errorf("waiting for a turn to read PostgreSQL behind other HTTP requests: %w", context.DeadlineExceeded)
	})
	require.NoError(t, err, "the offsets the worker knows stand in")
	require.Len(t, lag, owned)
}
