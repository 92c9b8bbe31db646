package handlers_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// due calls handlers.NextDues on the pool for one partition.
func (h *harness) due(partition int32) handlers.Due {
	h.t.Helper()
	dues, err := handlers.NextDues(h.t.Context(), h.st.Pool, []int32{partition})
	require.NoError(h.t, err)
	return dues[0]
}

// nextDue is due's time, in UTC, and whether there is one.
func (h *harness) nextDue(partition int32) (time.Time, bool) {
	h.t.Helper()
	d := h.due(partition)
	return d.At.UTC(), d.OK
}

func TestExpireDueEndsLeaseAndGrantsWaiter(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice", lease(20))) // due before bob's wait
	bob := h.acquire("a", "bob", wait(30), lease(5))
	h.one(bob)

	require.Zero(t, h.expireDue(), "nothing is due before expires_at")
	at, ok := h.nextDue(0)
	require.True(t, ok)
	require.Equal(t, acq.LockInfo.ExpiresAt.Time, at)

	// The lease's end brought near only now: a busy machine could outrun
	// a short lease before the checks above.
	ends := h.timeOf(`UPDATE lock_holders SET expires_at = clock_timestamp() WHERE owner_id = 'alice' RETURNING expires_at`)
	h.waitPast(ends)
	h.clearOutbox()
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	}, h.routes(), "one transaction ends the lease and grants the waiter")
	out := h.outbox()
	exp := out[0].Event
	require.Equal(t, topics.OpExpire, exp.Operation)
	require.Empty(t, exp.RequestID, "nobody asked for an expiry")
	require.NotContains(t, out[0].Headers, "request_id")
	require.True(t, exp.Success)
	require.Equal(t, "alice", exp.LockInfo.OwnerID)
	require.Equal(t, topics.StatusExpired, exp.LockInfo.Status)
	require.Equal(t, acq.LockInfo.FencingToken, exp.LockInfo.FencingToken)
	require.Nil(t, exp.DurationMS)
	require.False(t, exp.OccurredAt.Before(ends), "expired by database time, never early")
	require.Equal(t, exp.EventID, out[1].Event.EventID)

	granted := out[2].Event
	require.Equal(t, bob.RequestID, granted.RequestID)
	require.Equal(t, "bob", granted.LockInfo.OwnerID)
	require.Greater(t, granted.LockInfo.FencingToken, acq.LockInfo.FencingToken)
	require.Equal(t, int64(2), granted.LockInfo.AcquisitionCount)
	require.Equal(t, granted.EventID, h.outcome(bob.RequestID).EventID)
	require.Equal(t, []string{"lock.acquired alice", "lock.expired alice", "lock.acquired bob"}, h.history("a"))
	require.Equal(t, []string{"a bob acquired 0"}, h.lockStates())

	// bob's lease is watched now.
	at, ok = h.nextDue(0)
	require.True(t, ok)
	require.Equal(t, granted.LockInfo.ExpiresAt.Time, at)

	// Run again: nothing more to do, nothing written.
	h.clearOutbox()
	require.Zero(t, h.expireDue())
	require.Empty(t, h.routes())

	// alice, whose lease ended, cannot release bob's.
	require.Equal(t, topics.CodeNotOwner, h.one(h.release("a", "alice")).ErrorCode)
}

func TestExpireDueWithoutWaiters(t *testing.T) {
	h := newHarness(t)
	a := h.one(h.acquire("a", "alice", lease(0.2)))
	b := h.one(h.acquire("b", "bob", lease(0.2)))
	h.one(h.acquire("c", "carol", lease(30)))
	h.waitPast(a.LockInfo.ExpiresAt.Time)
	h.waitPast(b.LockInfo.ExpiresAt.Time)
	h.clearOutbox()
	require.Equal(t, 2, h.expireDue())
	require.ElementsMatch(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.bob lock.expired", "locks.lock.expired.v1 lock.expired",
	}, h.routes())
	require.Equal(t, []string{"a alice expired 0", "b bob expired 0", "c carol acquired 0"}, h.lockStates())

	// A new acquire of an expired lock gets a new token, and no second lock.expired.
	h.clearOutbox()
	ev := h.one(h.acquire("a", "dan"))
	require.Greater(t, ev.LockInfo.FencingToken, b.LockInfo.FencingToken)
	require.Equal(t, []string{"locks.replies.dan lock.acquired", "locks.lock.acquired.v1 lock.acquired"}, h.routes())
}

// One sweep settles many locks at once (their rows and holders read in one
// round trip, their writes sent in one): a lock whose row another
// transaction has locked is skipped, to be settled once it is free, and the
// others end, a waiter granted among them.
func TestExpireDueSkipsLockedRows(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	for _, lock := range []string{"a", "b", "c", "d"} {
		h.one(h.acquire(lock, "alice", lease(60)))
	}
	h.one(h.acquire("c", "bob", wait(30)))
	h.endLeases(`owner_id = 'alice'`) // bob queued behind c's first
	other, err := h.st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(context.WithoutCancel(ctx)) // a failed test leaves nothing locked
	_, err = other.Exec(ctx, `SELECT 1 FROM locks WHERE lock_name = 'b' FOR UPDATE`)
	require.NoError(t, err)

	h.clearOutbox()
	require.Equal(t, 3, h.expireDue())
	require.Equal(t, []string{"a alice expired 0", "b alice acquired 0", "c bob acquired 0", "d alice expired 0"}, h.lockStates())
	require.ElementsMatch(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	}, h.routes())

	require.NoError(t, other.Rollback(ctx))
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, "b alice expired 0", h.lockStates()[1])
}

// TestExpireDueOnlyItsPartition: the scheduler of another partition leaves
// a lease it does not watch alone.
func TestExpireDueOnlyItsPartition(t *testing.T) {
	h := newHarness(t)
	a := h.one(h.acquire("a", "alice", lease(0.2)))
	h.waitPast(a.LockInfo.ExpiresAt.Time)
	other := *h
	other.env.Partition = 3
	require.Zero(t, other.expireDue())
	_, ok := h.nextDue(3)
	require.False(t, ok)
	require.Equal(t, 1, h.expireDue())
}

func TestWaitersServedFIFO(t *testing.T) {
	h := newHarness(t)
	first := h.one(h.acquire("a", "holder"))
	var queue []topics.Command
	for i := 1; i <= 5; i++ {
		c := h.acquire("a", fmt.Sprintf("w%d", i), wait(60))
		ev := h.one(c)
		require.Equal(t, topics.TypeQueued, ev.Type)
		require.Equal(t, i, ev.QueuePosition)
		queue = append(queue, c)
	}
	require.Equal(t, int64(5), h.scalar(`SELECT waiter_count FROM locks`))

	holder, last := "holder", first.LockInfo.FencingToken
	var order []string
	for i := range queue {
		evs := h.apply(h.release("a", holder))
		require.Equal(t, topics.TypeReleased, evs[0].Type)
		granted := find(evs, topics.TypeAcquired)
		require.Len(t, granted, 1)
		g := granted[0]
		require.Equal(t, queue[i].RequestID, g.RequestID)
		require.Greater(t, g.LockInfo.FencingToken, last)
		require.Equal(t, int64(4-i), h.scalar(`SELECT waiter_count FROM locks`))
		require.Equal(t, int64(4-i), h.scalar(`SELECT count(*) FROM lock_waiters`))
		holder, last = g.LockInfo.OwnerID, g.LockInfo.FencingToken
		order = append(order, holder)
	}
	require.Equal(t, []string{"w1", "w2", "w3", "w4", "w5"}, order)
	evs := h.apply(h.release("a", holder))
	require.Len(t, evs, 1)
	require.Equal(t, []string{"a w5 released 0"}, h.lockStates())
}

func TestWaiterTimesOutWhileLockHeld(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(30)))
	bob := h.acquire("a", "bob", wait(30))
	require.Equal(t, topics.TypeQueued, h.one(bob).Type)
	carol := h.acquire("a", "carol", wait(30))
	h.one(carol)
	deadline := h.endWaits("owner_id = 'bob'")
	at, ok := h.nextDue(0)
	require.True(t, ok)
	require.Equal(t, deadline, at, "the waiter's deadline comes before any lease ends")

	h.clearOutbox()
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, []string{"locks.replies.bob lock.rejected"}, h.routes())
	ev := h.outbox()[0].Event
	require.Equal(t, topics.CodeLockTimeout, ev.ErrorCode)
	require.False(t, ev.Success)
	require.Equal(t, bob.RequestID, ev.RequestID, "the timeout answers bob's acquire")
	require.Equal(t, topics.OpAcquire, ev.Operation)
	require.Equal(t, "alice", ev.LockInfo.OwnerID)
	require.Equal(t, topics.CodeLockTimeout, h.outcome(bob.RequestID).ErrorCode)
	require.Equal(t, []string{"a alice acquired 1"}, h.lockStates())
	require.Equal(t, int64(0), h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id = 'bob'`))

	// bob's acquire retried gets the timeout again and does not queue.
	again := h.apply(bob)
	require.Len(t, again, 1)
	require.Equal(t, ev.EventID, again[0].EventID)
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_waiters`))

	// The release goes to carol.
	granted := find(h.apply(h.release("a", "alice")), topics.TypeAcquired)
	require.Len(t, granted, 1)
	require.Equal(t, carol.RequestID, granted[0].RequestID)
}

// TestTimedOutWaiterSkippedOnRelease: the lock is released after a waiter's
// deadline but before the scheduler answered it: that waiter gets
// LOCK_TIMEOUT and the next live waiter gets the lock.
func TestTimedOutWaiterSkippedOnRelease(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(30)))
	bob := h.acquire("a", "bob", wait(30))
	h.one(bob)
	carol := h.acquire("a", "carol", wait(30))
	h.one(carol)
	h.endWaits("owner_id = 'bob'")
	h.clearOutbox()

	evs := h.apply(h.release("a", "alice"))
	require.Equal(t, []string{
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released",
		"locks.replies.bob lock.rejected",
		"locks.replies.carol lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	}, h.routes())
	rej := find(evs, topics.TypeRejected)
	require.Len(t, rej, 1)
	require.Equal(t, topics.CodeLockTimeout, rej[0].ErrorCode)
	require.Equal(t, bob.RequestID, rej[0].RequestID)
	granted := find(evs, topics.TypeAcquired)
	require.Len(t, granted, 1)
	require.Equal(t, carol.RequestID, granted[0].RequestID)
	require.Equal(t, []string{"a carol acquired 0"}, h.lockStates())
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters`))
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice", "lock.acquired carol"}, h.history("a"), "bob is never granted")
}

// TestOnlyTimedOutWaiters: a release whose every waiter timed out frees the
// lock and answers them all.
func TestOnlyTimedOutWaiters(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(30)))
	h.one(h.acquire("a", "bob", wait(30)))
	h.one(h.acquire("a", "carol", wait(30)))
	h.endWaits("true")
	h.clearOutbox()
	h.apply(h.release("a", "alice"))
	require.Equal(t, []string{
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released",
		"locks.replies.bob lock.rejected", "locks.replies.carol lock.rejected",
	}, h.routes())
	require.Equal(t, []string{"a alice released 0"}, h.lockStates())
	_, ok := h.nextDue(0)
	require.False(t, ok)
}

func TestNextDue(t *testing.T) {
	h := newHarness(t)
	_, ok := h.nextDue(0)
	require.False(t, ok, "nothing at all")

	long := h.one(h.acquire("long", "alice", lease(60)))
	at, ok := h.nextDue(0)
	require.True(t, ok)
	require.Equal(t, long.LockInfo.ExpiresAt.Time, at)

	short := h.one(h.acquire("short", "bob", lease(20)))
	at, _ = h.nextDue(0)
	require.Equal(t, short.LockInfo.ExpiresAt.Time, at, "the earliest lease")

	h.one(h.acquire("long", "carol", wait(5)))
	at, _ = h.nextDue(0)
	require.Equal(t, h.timeOf(`SELECT deadline FROM lock_waiters WHERE owner_id = 'carol'`), at, "a waiter's deadline counts too")

	_, ok = h.nextDue(1)
	require.False(t, ok, "other partitions have nothing")

	h.one(h.release("long", "carol"))
	h.one(h.release("short", "bob"))
	at, _ = h.nextDue(0)
	require.Equal(t, long.LockInfo.ExpiresAt.Time, at, "released leases are not due")
	evs := h.apply(h.release("long", "alice"))
	require.Len(t, evs, 1)
	_, ok = h.nextDue(0)
	require.False(t, ok, "released and withdrawn: nothing due")
}

// TestExpireDueIsBounded: a backlog of ended leases (after an outage, say) is
// ended MaxSweep per transaction, each with its lock.expired.
func TestExpireDueIsBounded(t *testing.T) {
	h := newHarness(t)
	_, err := h.st.Pool.Exec(context.Background(), `
		WITH l AS (
			INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition, updated_at)
			SELECT '', 'backlog-' || i, 'acquired', 1, 1, 0, now() - interval '2 minutes' FROM generate_series(1, $1::int) i
			RETURNING lock_name)
		INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
		SELECT '', lock_name, 'gone', 'exclusive', nextval('fencing_tokens'), now() - interval '2 minutes', now() - interval '1 minute', 60, 0
		FROM l`, handlers.MaxSweep*2+7)
	require.NoError(t, err)
	require.Equal(t, handlers.MaxSweep, h.expireDue())
	require.Equal(t, handlers.MaxSweep, h.expireDue())
	require.Equal(t, 7, h.expireDue())
	require.Zero(t, h.expireDue())
	require.Equal(t, int64(2*handlers.MaxSweep+7), h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.expired'`))
}

// TestTimedOutWaiterWritesUnderItsPartition: a waiter of another partition
// than its lock's (a producer not keying by lock key, or partitions added)
// times out on its own partition's scheduler, and what that writes goes
// under that partition, after its lock.queued: the requester hears them in
// order, without waiting for the relay of the lock's partition, which
// another replica may run. A lease's end, by contrast, follows the lock's
// partition, even where the lease's scheduler is another's.
func TestTimedOutWaiterWritesUnderItsPartition(t *testing.T) {
	h := newHarness(t)
	p3 := *h
	p3.env.Partition = 3
	alice := h.acquire("a", "alice", lease(30))
	require.Equal(t, topics.TypeAcquired, p3.one(alice).Type)
	bob := h.acquire("a", "bob", wait(30))
	require.Equal(t, topics.TypeQueued, h.one(bob).Type)
	h.endWaits("true")

	h.clearOutbox()
	require.Zero(t, p3.expireDue(), "the waiter is watched by its own partition's scheduler")
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, topics.CodeLockTimeout, h.outcome(bob.RequestID).ErrorCode)
	require.Equal(t, []string{"0 locks.replies.bob", "0 " + h.env.Names.State},
		h.texts(`SELECT source_partition || ' ' || topic FROM outbox ORDER BY id`))

	// The lock's last change moved to partition 5 (as a grant there would);
	// alice's lease is still watched by partition 3's scheduler.
	_, err := h.st.Pool.Exec(context.Background(), `UPDATE locks SET source_partition = 5`)
	require.NoError(t, err)
	h.endLeases("true")
	h.clearOutbox()
	require.Equal(t, 1, p3.expireDue())
	require.Equal(t, []string{"5 locks.replies.alice", "5 " + h.env.Names.Expired, "5 " + h.env.Names.State},
		h.texts(`SELECT source_partition || ' ' || topic FROM outbox ORDER BY id`))
}

// TestSessionEndOfManyLocks: a session that held more locks than one
// pipeline takes (MaxSweep) ends all its leases, each once.
func TestSessionEndOfManyLocks(t *testing.T) {
	h := newHarness(t)
	n := handlers.MaxSweep + 5
	_, err := h.st.Pool.Exec(context.Background(), `
		WITH s AS (
			INSERT INTO sessions (id, owner_id, ttl, expires_at, reply_to, source_partition)
			VALUES ('s1', 'alice', 10, now() - interval '1 second', 'locks.replies.alice', 0)),
		l AS (
			INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
			SELECT '', 'many-' || i, 'acquired', 1, 1, i % 2 FROM generate_series(1, $1::int) i RETURNING lock_name, source_partition)
		INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, lease_duration, source_partition, session_id, reply_to)
		SELECT '', lock_name, 'alice', 'exclusive', nextval('fencing_tokens'), now(), 10, source_partition, 's1', 'locks.replies.alice' FROM l`, n)
	require.NoError(t, err)
	_, evs := h.expireDueEvents()
	exp := find(evs, topics.TypeSessionExpired)
	require.Len(t, exp, 1)
	require.Equal(t, n, exp[0].SessionInfo.Leases)
	require.Len(t, find(evs, topics.TypeExpired), n)
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
	require.Equal(t, int64(n), h.scalar(`SELECT count(*) FROM locks WHERE status = 'expired' AND holder_count = 0`))
	require.Equal(t, int64(n), h.scalar(`SELECT count(*) FROM outbox o JOIN locks l ON o.key = convert_to(l.lock_name, 'UTF8')
		WHERE o.topic = $1 AND o.source_partition = l.source_partition`, h.env.Names.Expired), "each under its lock's partition")
}

// TestExpireDueHandsOffManyLocks: leases of several locks ending together are
// settled in one pipeline, their writes sent together after every lock is
// decided; each lock's next waiter is granted with a token of its own,
// greater than the lease it follows, and its queue moves on.
func TestExpireDueHandsOffManyLocks(t *testing.T) {
	h := newHarness(t)
	locks := []string{"m1", "m2", "m3"}
	held := map[string]int64{}
	for _, l := range locks {
		held[l] = h.one(h.acquire(l, "alice", lease(2))).LockInfo.FencingToken // outlives the queueing
		for _, w := range []string{"bob", "carol"} {
			require.Equal(t, topics.TypeQueued, h.one(h.acquire(l, w, wait(60), lease(60))).Type)
		}
	}
	h.waitPast(h.timeOf(`SELECT max(expires_at) FROM lock_holders WHERE owner_id = 'alice'`))
	n, evs := h.expireDueEvents()
	require.Equal(t, len(locks), n)
	granted := find(evs, topics.TypeAcquired)
	require.Len(t, granted, len(locks))
	tokens := map[int64]bool{}
	for _, g := range granted {
		require.Equal(t, "bob", g.LockInfo.OwnerID)
		require.Greater(t, g.LockInfo.FencingToken, held[g.LockInfo.LockName])
		tokens[g.LockInfo.FencingToken] = true
	}
	require.Len(t, tokens, len(locks), "a token per grant")
	require.Len(t, find(evs, topics.TypeExpired), len(locks))
	require.Equal(t, []string{"m1 bob acquired 1", "m2 bob acquired 1", "m3 bob acquired 1"}, h.lockStates())
	require.Equal(t, int64(len(locks)), h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id = 'carol'`))
}

// TestNextDueCenturiesAhead: a lease pushed centuries ahead (extends add to
// expires_at, and nothing caps them without max_hold) is due in a positive
// wait, not one overflowing a Duration into a negative one, which had the
// scheduler run an expiry transaction every 50 ms for nothing.
func TestNextDueCenturiesAhead(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("far", "alice", lease(60)))
	far := h.timeOf(`UPDATE lock_holders SET expires_at = clock_timestamp() + interval '400 years' WHERE owner_id = 'alice' RETURNING expires_at`)
	d := h.due(0)
	require.True(t, d.OK)
	require.Equal(t, far, d.At.UTC())
	require.Positive(t, d.In, "due in 400 years")
}

// TestExpireDueSkipsLockedWaits: a timed-out waiter, or a passed
// lock-delay, of a lock another transaction holds is left to the next
// step, not waited for: the step may hold other locks already (an ended
// session's), so waiting could deadlock with a transaction that takes
// them in key order.
func TestExpireDueSkipsLockedWaits(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(60)))
	h.one(h.acquire("a", "bob", wait(30)))
	h.endWaits("owner_id = 'bob'")
	other, _ := h.blocker()
	_, err := other.Exec(ctx, `SELECT 1 FROM locks WHERE lock_name = 'a' FOR UPDATE`)
	require.NoError(t, err)

	h.clearOutbox()
	require.Zero(t, h.expireDue(), "the held lock was skipped, not waited for")
	require.Empty(t, h.routes())

	_, err = other.Exec(ctx, `ROLLBACK`)
	require.NoError(t, err)
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, []string{"locks.replies.bob lock.rejected"}, h.routes())
}

// TestWaitBacklogAnsweredABoundAtATime: a lock's backlog of waiters past
// their deadline (after an outage, say) is answered a bound at a time,
// the oldest deadlines first, by the expiry step and by commands alike,
// each LOCK_TIMEOUT once: MaxSweep in one transaction, not every one of
// them. They are never granted, so a live waiter behind the rest is
// granted once the lock is free: only their answers come after its grant.
func TestWaitBacklogAnsweredABoundAtATime(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	n := 2*handlers.MaxSweep + handlers.MaxSweep/2
	alice := h.one(h.acquire("a", "alice", lease(600)))
	h.one(h.acquire("a", "q0", wait(600)))
	// Copies of q0's wait behind it, q0 itself renamed, then a live one
	// behind them all.
	_, err := h.st.Pool.Exec(ctx, `INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, reply_to, deadline, source_partition)
		SELECT namespace, lock_name, 'q' || g, 'wait-q' || g, lease_duration, reply_to, deadline, source_partition
		FROM lock_waiters, generate_series(1, $1::int - 1) g WHERE owner_id = 'q0' ORDER BY g`, n)
	require.NoError(t, err)
	_, err = h.st.Pool.Exec(ctx, `UPDATE lock_waiters SET request_id = 'wait-q0' WHERE owner_id = 'q0'`)
	require.NoError(t, err)
	_, err = h.st.Pool.Exec(ctx, `UPDATE locks SET waiter_count = $1`, n)
	require.NoError(t, err)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s-q2", "q2", ttl(3600))).Type)
	_, err = h.st.Pool.Exec(ctx, `UPDATE lock_waiters SET session_id = 's-q2' WHERE owner_id = 'q2'`)
	require.NoError(t, err)
	late := h.acquire("a", "late", wait(600))
	require.Equal(t, n+1, h.one(late).QueuePosition)
	// The q's waits end, the later queued the older their deadline.
	h.waitPast(h.timeOf(`WITH u AS (UPDATE lock_waiters SET deadline = statement_timestamp() - make_interval(secs => substr(owner_id, 2)::int)
		WHERE owner_id LIKE 'q%' RETURNING deadline) SELECT max(deadline) FROM u`))

	answered := map[string]bool{}
	oldest := n // the first queued of the q's answered so far
	// step checks that evs answer k of the q's, each once, those of the
	// oldest deadlines (the last queued): those left are the first queued.
	step := func(evs []topics.Event, k int) {
		t.Helper()
		timeouts := find(evs, topics.TypeRejected)
		require.Len(t, timeouts, k)
		for _, ev := range timeouts {
			require.Equal(t, topics.CodeLockTimeout, ev.ErrorCode)
			require.False(t, answered[ev.RequestID], "%s answered twice", ev.RequestID)
			answered[ev.RequestID] = true
			i, err := strconv.Atoi(strings.TrimPrefix(ev.RequestID, "wait-q"))
			require.NoError(t, err)
			oldest = min(oldest, i)
		}
		require.Equal(t, int64(n-len(answered)), h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id LIKE 'q%'`))
		require.Less(t, h.scalar(`SELECT coalesce(max(substr(owner_id, 2)::int), -1) FROM lock_waiters WHERE owner_id LIKE 'q%'`), int64(oldest))
	}
	ended, evs := h.expireDueEvents()
	require.Equal(t, handlers.MaxSweep, ended)
	step(evs, handlers.MaxSweep)

	// Past their deadline beyond the bound, q1 still finds its wait (it
	// may withdraw it, and is never queued twice), and the end of q2's
	// session its wait.
	answers := func(evs []topics.Event) []string {
		var got []string
		for _, ev := range evs {
			got = append(got, ev.Type+" "+ev.RequestID+" "+ev.ErrorCode+ev.Reason)
		}
		return got
	}
	q1 := h.release("a", "q1")
	require.Equal(t, []string{"lock.withdrawn " + q1.RequestID + " ", "lock.withdrawn wait-q1 "}, answers(h.apply(q1)))
	q2 := h.session(topics.OpSessionClose, "s-q2", "q2")
	require.Equal(t, []string{"lock.withdrawn wait-q2 " + topics.ReasonSessionClosed, "session.closed " + q2.RequestID + " "}, answers(h.apply(q2)))
	answered["wait-q1"], answered["wait-q2"] = true, true
	step(nil, 0)

	// alice's release answers as many more and hands the lock to late.
	evs = h.apply(h.release("a", "alice"))
	step(evs, handlers.MaxSweep)
	granted := find(evs, topics.TypeAcquired)
	require.Len(t, granted, 1)
	require.Equal(t, late.RequestID, granted[0].RequestID)
	require.Greater(t, granted[0].LockInfo.FencingToken, alice.LockInfo.FencingToken)
	rest := n - 2*handlers.MaxSweep - 2 // q1 and q2 withdrew
	require.Equal(t, int64(rest), h.scalar(`SELECT waiter_count FROM locks`))

	ended, evs = h.expireDueEvents()
	require.Equal(t, rest, ended)
	step(evs, rest)
	require.Zero(t, h.expireDue())
	require.Len(t, answered, n)
	require.Equal(t, "late 0", h.scalarText(`SELECT string_agg(owner_id, ' ') || ' ' || min(waiter_count) FROM lock_holders JOIN locks USING (namespace, lock_name)`))
}

// pastDeadline queues n copies of owner's wait on lock, each past its
// deadline, behind every other waiter, and waits until that has passed.
func (h *harness) pastDeadline(lock, owner string, n int) {
	h.t.Helper()
	deadline := h.timeOf(`WITH i AS (
			INSERT INTO lock_waiters (namespace, lock_name, owner_id, mode, request_id, lease_duration, reply_to, deadline, source_partition)
			SELECT namespace, lock_name, 'due' || g, mode, 'wait-due' || g, lease_duration, reply_to, statement_timestamp(), source_partition
			FROM lock_waiters, generate_series(1, $3::int) g WHERE lock_name = $1 AND owner_id = $2 ORDER BY g
			RETURNING deadline)
		SELECT max(deadline) FROM i`, lock, owner, n)
	_, err := h.st.Pool.Exec(context.Background(),
		`UPDATE locks SET waiter_count = (SELECT count(*) FROM lock_waiters w WHERE w.lock_name = $1) WHERE lock_name = $1`, lock)
	require.NoError(h.t, err)
	h.waitPast(deadline)
}

// LOCK_HELD's retry_after is exact while more waiters past their deadline
// wait than a decision answers (dueBound): the reads of the live ones say
// where those end, whatever Waiting counts. First the head holds every
// live waiter; then a hand-off reads past the head, and its last page is
// the end.
func TestRetryAfterExactPastTheDueBound(t *testing.T) {
	h := newHarness(t)
	sem := func(c *topics.Command) { c.Limit = 3 }
	h.one(h.acquire("a", "h1", lease(10), sem))
	h2 := h.one(h.acquire("a", "h2", lease(20), sem))
	h.one(h.acquire("a", "h3", lease(100), sem))
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("a", "c", wait(600), sem)).Type)
	h.pastDeadline("a", "c", handlers.MaxSweep+1)
	ev := h.one(h.acquire("a", "x", sem))
	require.Equal(t, topics.CodeLockHeld, ev.ErrorCode)
	require.InDelta(t, h2.LockInfo.ExpiresAt.Sub(ev.OccurredAt.Time).Seconds(), *ev.RetryAfterSeconds, 0.001,
		"h1's place goes to c, h2's to x (the cap: h3's end)")

	// A writer's lease ends; 17 readers fill the head (limit + 16), three
	// more and a writer come after; x, a reader, waits for the writer's
	// wait to end.
	h.one(h.acquire("b", "w", lease(600)))
	for i := range 20 {
		require.Equal(t, topics.TypeQueued, h.one(h.acquire("b", fmt.Sprintf("r%d", i), wait(600), lease(3600), shared)).Type)
	}
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("b", "late", wait(300))).Type)
	h.pastDeadline("b", "late", handlers.MaxSweep+1)
	h.endLeases(`owner_id = 'w'`)
	x := h.acquire("b", "x", shared)
	evs := h.apply(x)
	require.Len(t, find(evs, topics.TypeAcquired), 20)
	ev = find(evs, topics.TypeRejected)[handlers.MaxSweep]
	require.Equal(t, x.RequestID, ev.RequestID)
	require.Equal(t, topics.CodeLockHeld, ev.ErrorCode)
	late := h.timeOf(`SELECT deadline FROM lock_waiters WHERE owner_id = 'late'`)
	require.InDelta(t, late.Sub(ev.OccurredAt.Time).Seconds(), *ev.RetryAfterSeconds, 0.001, "late's wait ends (the cap: the readers' end)")
}
