package handlers_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestAcquireSettlesEndedLeaseFirst: an acquire that finds an ended lease
// nobody has ended yet emits its lock.expired first, in the same transaction.
func TestAcquireSettlesEndedLeaseFirst(t *testing.T) {
	h := newHarness(t)
	old := h.one(h.acquire("a", "alice", lease(0.2)))
	h.waitPast(old.LockInfo.ExpiresAt.Time)
	h.clearOutbox()

	cmd := h.acquire("a", "bob")
	evs := h.apply(cmd)
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	}, h.routes())
	require.Len(t, evs, 2)
	require.Equal(t, topics.TypeExpired, evs[0].Type)
	require.Equal(t, "alice", evs[0].LockInfo.OwnerID)
	require.Equal(t, cmd.RequestID, evs[1].RequestID)
	require.Greater(t, evs[1].LockInfo.FencingToken, old.LockInfo.FencingToken)
	require.Equal(t, int64(2), evs[1].LockInfo.AcquisitionCount)
	require.Equal(t, []string{"lock.acquired alice", "lock.expired alice", "lock.acquired bob"}, h.history("a"))
}

// TestAcquireOfEndedLeaseWithWaiter: the waiter was first, so it gets the
// lock; the newcomer finds it held.
func TestAcquireOfEndedLeaseWithWaiter(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(60)))
	carol := h.acquire("a", "carol", wait(30))
	h.one(carol)
	h.endLeases(`owner_id = 'alice'`) // carol queued behind it first
	h.clearOutbox()

	ev := h.one(h.acquire("a", "dan"))
	require.Equal(t, topics.CodeLockHeld, ev.ErrorCode)
	require.Equal(t, "carol", ev.LockInfo.OwnerID)
	require.Positive(t, *ev.RetryAfterSeconds)
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.carol lock.acquired", "locks.lock.acquired.v1 lock.acquired",
		"locks.replies.dan lock.rejected",
	}, h.routes())
	require.Equal(t, carol.RequestID, h.outbox()[2].Event.RequestID)
}

// TestGrantCarriesTheWaitersAcquire: a waiter is granted with its own lease,
// metadata, reply_to and request_id, and its default lease when it gave none.
func TestGrantCarriesTheWaitersAcquire(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(60), func(c *topics.Command) { c.OwnerMetadata = []byte(`{"a":1}`) }))
	bob := h.acquire("a", "bob", wait(30), func(c *topics.Command) { c.OwnerMetadata = []byte(`null`) })
	h.one(bob)
	h.clearOutbox()

	g := find(h.apply(h.release("a", "alice")), topics.TypeAcquired)[0]
	require.Equal(t, bob.RequestID, g.RequestID)
	require.Equal(t, 30.0, g.LockInfo.LeaseDuration, "the default lease")
	require.Empty(t, g.LockInfo.OwnerMetadata, "alice's metadata is not bob's")
	require.Zero(t, g.LockInfo.ExtensionCount)
	require.Equal(t, bob.RequestID+" "+bob.ReplyTo, h.scalarText(`SELECT holder_request_id || ' ' || reply_to FROM `+v1Locks))

	// bob's lease ending is told to bob's reply_to, from his acquire.
	_, err := h.st.Pool.Exec(t.Context(), `UPDATE lock_holders SET expires_at = clock_timestamp()`)
	require.NoError(t, err)
	h.clearOutbox()
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, []string{"locks.replies.bob lock.expired", "locks.lock.expired.v1 lock.expired"}, h.routes())
}

// TestGrantToWaiterWithoutReplyTo: a waiter that asked for no reply is still
// granted, and the lifecycle topic hears of it.
func TestGrantToWaiterWithoutReplyTo(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice"))
	bob := h.acquire("a", "bob", wait(30))
	bob.ReplyTo = ""
	h.apply(bob)
	h.clearOutbox()
	evs := h.apply(h.release("a", "alice"))
	require.Equal(t, []string{
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released",
		"locks.lock.acquired.v1 lock.acquired",
	}, h.routes())
	require.Equal(t, bob.RequestID, find(evs, topics.TypeAcquired)[0].RequestID)
	require.Equal(t, topics.TypeAcquired, h.outcome(bob.RequestID).Type)
}

// TestGrantedLeaseWatchedByWaitersPartition: the lease granted to a waiter is
// watched by the partition its acquire came from.
func TestGrantedLeaseWatchedByWaitersPartition(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice"))
	p2 := *h
	p2.env.Partition = 2
	p2.seq = 1000 // request ids of its own
	p2.one(p2.acquire("a", "bob", wait(30)))
	h.apply(h.release("a", "alice"))
	require.Equal(t, int64(2), h.scalar(`SELECT source_partition FROM locks`))
	_, ok := h.nextDue(0)
	require.False(t, ok)
	at, ok := h.nextDue(2)
	require.True(t, ok)
	require.Equal(t, h.timeOf(`SELECT expires_at FROM `+v1Locks), at)
}
