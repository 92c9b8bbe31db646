package client_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
)

// Under REQUIRE_FENCING_TOKEN an acquire given up after its grant is given
// back even when no query shows its lease: granted in one hand-off of a
// shared lock behind more readers than the holders list shows
// (MaxHoldersBytes: their metadata fills it) and before others, it is
// neither listed nor lock_info's own, the newest holder. The acquire's own
// answer, asked again, tells its token.
func TestGivenUpGrantCutFromHoldersReleasedUnderRequireFencingToken(t *testing.T) {
	const before, after = 170, 5 // 4 KB each: about 155 fit the list
	e := fencedWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// With room for each round trip of the give-back (ReplyTimeout bounds
	// each): the relay's producer recovers from the lost record's sequence
	// gap first, which takes seconds on kfake.
	fenced := func(requester string) *client.Client {
		c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: requester, ReplyTimeout: 15 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	const lock = "fenced-cut"
	writer, readers, c := fenced("cut-writer"), fenced("cut-readers"), fenced("cut-mine")
	w, err := writer.Acquire(ctx, lock, client.WithLease(time.Minute))
	require.NoError(t, err)

	queued := make(chan int, before+after+1)
	read := func(ctx context.Context, cl *client.Client) (*client.Lease, error) {
		return cl.Acquire(ctx, lock, client.WithMode(client.Shared), client.WithLease(time.Minute),
			client.WithMetadata(map[string]string{"pad": strings.Repeat("x", 4000)}),
			client.OnQueued(func(p int) { queued <- p }))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var leases []*client.Lease
	var errs []error
	queue := func(n int) {
		for range n {
			wg.Go(func() {
				l, err := read(ctx, readers)
				mu.Lock()
				defer mu.Unlock()
				leases, errs = append(leases, l), append(errs, err)
			})
		}
		for range n {
			<-queued
		}
	}
	queue(before)
	gone, giveUp := context.WithCancel(ctx)
	defer giveUp()
	mine := make(chan error, 1)
	go func() {
		_, err := read(gone, c)
		mine <- err
	}()
	require.Equal(t, before+1, <-queued)
	queue(after)

	dropped := dropNextProduceThen(t, e, c.ReplyTopic(), giveUp) // its next answer is its grant
	require.NoError(t, w.Release(ctx))
	require.ErrorIs(t, <-mine, context.Canceled, "given up when its answer was lost")
	require.EqualValues(t, 1, dropped.Load())
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	// Acquire returned once its give-back was answered.
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.Less(t, len(st.Info.Holders), before, "the list is cut before the given-up grant")
	require.Equal(t, before+after, st.Info.HolderCount, "the given-up grant was released")

	for _, l := range leases {
		require.NoError(t, l.Release(ctx))
	}
	st, err = c.Query(ctx, lock)
	require.NoError(t, err)
	require.NotEqual(t, client.StatusAcquired, st.Status, "held by %q", st.Owner)
}
