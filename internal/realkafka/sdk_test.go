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
// holder, the lifecycle topic, read through Client.Subscriber, has both
// grants, Watch saw every revision once and in order, and Locks, the table
// read from the compacted lock state topic, ends where Watch did.
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
	revs, err := a.Watch(ctx, lock)
	require.NoError(t, err)
	select {
	case lr := <-revs:
		require.Zero(t, lr.Revision, "an unused lock is revision 0")
	case <-ctx.Done():
		t.Fatal("Watch delivered nothing")
	}
	// Revisions up to the second release, read while the test goes on
	// (Watch holds its reading back for a slow receiver).
	watched := make(chan []client.LockRevision, 1)
	go func() {
		var seen []client.LockRevision
		for lr := range revs {
			seen = append(seen, lr)
			if lr.Status == client.StatusReleased && lr.Acquisitions == 2 {
				break
			}
		}
		watched <- seen
	}()

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
		l, err := b.Acquire(ctx, lock, client.WithWait(time.Minute), client.OnQueued(func(p int) {
			select { // once is enough: a resent acquire is told it is queued again
			case queued <- p:
			default:
			}
		}))
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

	var seen []client.LockRevision
	select {
	case seen = <-watched:
	case <-ctx.Done():
		t.Fatal("Watch did not deliver the second release")
	}
	for i, lr := range seen {
		require.Equal(t, int64(i+1), lr.Revision, "every revision once, in order: %+v", seen)
	}
	last := seen[len(seen)-1]
	table, err := b.Locks(ctx)
	require.NoError(t, err)
	var row *client.LockRevision
	for i := range table {
		if table[i].Name == lock {
			row = &table[i]
		}
	}
	require.NotNil(t, row, "the lock table has %s", lock)
	require.Equal(t, last.Revision, row.Revision)
	require.Equal(t, client.StatusReleased, row.Status)
}
