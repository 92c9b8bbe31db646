package realkafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
)

// testSDK takes a lock with the SDK, is refused it by a second client, which
// then waits for it and is granted it on release; Query reports the new
// holder, and the lifecycle topic, read through Client.Subscriber, has both
// grants.
func testSDK(ctx context.Context, t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	newClient := func(requester string) *client.Client {
		c, err := client.New(ctx, client.Config{Brokers: s.brokers, Requester: requester, Topics: s.names})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := newClient("sdk-a"), newClient("sdk-b")
	const lock = "sdk-orders-42"

	sub, err := b.Subscriber(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	acquired, err := sub.Subscribe(ctx, s.names.Acquired)
	require.NoError(t, err)

	first, err := a.Acquire(ctx, lock, client.WithLease(10*time.Second))
	require.NoError(t, err)
	_, err = b.TryAcquire(ctx, lock)
	require.ErrorIs(t, err, client.ErrLockHeld)

	type grant struct {
		lease *client.Lease
		err   error
	}
	queued, granted := make(chan int, 1), make(chan grant, 1)
	go func() {
		l, err := b.Acquire(ctx, lock, client.WithWait(time.Minute), client.OnQueued(func(p int) { queued <- p }))
		granted <- grant{l, err}
	}()
	select {
	case p := <-queued:
		require.Equal(t, 1, p, "first in the queue")
	case g := <-granted:
		t.Fatalf("the waiter was answered before it queued: %v", g.err)
	case <-ctx.Done():
		t.Fatal("the waiter was not queued")
	}
	require.NoError(t, first.Release(ctx))
	var second *client.Lease
	select {
	case g := <-granted:
		require.NoError(t, g.err)
		second = g.lease
	case <-ctx.Done():
		t.Fatal("the waiter was not granted the lock on release")
	}
	require.Greater(t, second.Token, first.Token, "fencing tokens rise")

	st, err := a.Query(ctx, lock)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st.Status)
	require.Equal(t, second.Owner, st.Owner)
	require.Equal(t, second.Token, st.Token)
	require.False(t, st.AcquiredAt.IsZero(), "Query gives the grant's time")

	tokens := map[int64]bool{}
	for !tokens[first.Token] || !tokens[second.Token] {
		select {
		case msg, ok := <-acquired:
			require.True(t, ok, "the subscription ended")
			ev, err := client.DecodeMessage(msg)
			msg.Ack()
			require.NoError(t, err)
			if ev.LockInfo != nil && ev.LockInfo.LockName == lock {
				tokens[ev.LockInfo.FencingToken] = true
			}
		case <-ctx.Done():
			t.Fatalf("lock.acquired of tokens %d and %d not read from %s; read %v", first.Token, second.Token, s.names.Acquired, tokens)
		}
	}
	require.NoError(t, second.Release(ctx))
}
