package handlers_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func TestRelease(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice", lease(30)))
	require.Equal(t, topics.TypeAcquired, acq.Type)
	h.clearOutbox()

	cmd := h.release("a", "alice", token(acq.LockInfo.FencingToken))
	ev := h.one(cmd)
	require.Equal(t, topics.TypeReleased, ev.Type)
	require.True(t, ev.Success)
	require.Equal(t, topics.OpRelease, ev.Operation)
	require.Equal(t, cmd.RequestID, ev.RequestID)
	require.Equal(t, "alice", ev.LockInfo.OwnerID)
	require.Equal(t, topics.StatusReleased, ev.LockInfo.Status)
	require.Equal(t, acq.LockInfo.FencingToken, ev.LockInfo.FencingToken)
	require.Equal(t, []string{"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released"}, h.routes())
	out := h.outbox()
	require.Equal(t, ev.EventID, out[0].Event.EventID)
	require.Equal(t, ev.EventID, out[1].Event.EventID, "reply and lifecycle carry the same event")
	require.Equal(t, "a", out[1].Key)

	require.Equal(t, "released", h.scalarText(`SELECT status FROM locks WHERE lock_name = 'a'`))
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice"}, h.history("a"))
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.released' AND event_id = $1 AND fencing_token = $2`,
		ev.EventID, acq.LockInfo.FencingToken))
	require.Equal(t, topics.TypeReleased, h.outcome(cmd.RequestID).Type)
}

// TestReleaseErrors: every refusal answers only the releaser, and a refused
// release leaves the holder holding.
func TestReleaseErrors(t *testing.T) {
	cases := []refusalCase{
		{
			name: "another owner: NOT_OWNER",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice"))
				return h.release("a", "bob")
			},
			code: topics.CodeNotOwner, status: topics.StatusAcquired, owner: "alice", stillHeldBy: "alice",
		},
		{
			name: "another owner with the holder's token: NOT_OWNER",
			setup: func(h *harness) topics.Command {
				acq := h.one(h.acquire("a", "alice"))
				return h.release("a", "bob", token(acq.LockInfo.FencingToken))
			},
			code: topics.CodeNotOwner, status: topics.StatusAcquired, owner: "alice", stillHeldBy: "alice",
		},
		{
			name: "holder with a wrong token: TOKEN_MISMATCH",
			setup: func(h *harness) topics.Command {
				acq := h.one(h.acquire("a", "alice"))
				return h.release("a", "alice", token(acq.LockInfo.FencingToken+1))
			},
			code: topics.CodeTokenMismatch, status: topics.StatusAcquired, owner: "alice", stillHeldBy: "alice",
		},
		{
			name: "holder with an old token of its own: TOKEN_MISMATCH",
			setup: func(h *harness) topics.Command {
				old := h.one(h.acquire("a", "alice"))
				h.one(h.release("a", "alice"))
				h.one(h.acquire("a", "alice"))
				return h.release("a", "alice", token(old.LockInfo.FencingToken))
			},
			code: topics.CodeTokenMismatch, status: topics.StatusAcquired, owner: "alice", stillHeldBy: "alice",
		},
		{
			name:   "no row: NOT_HELD, status free",
			setup:  func(h *harness) topics.Command { return h.release("a", "alice") },
			code:   topics.CodeNotHeld,
			status: topics.StatusFree,
		},
		{
			name: "already released: NOT_HELD",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice"))
				h.one(h.release("a", "alice"))
				return h.release("a", "alice")
			},
			code: topics.CodeNotHeld, status: topics.StatusReleased, owner: "alice",
		},
		{
			name: "lease already ended: NOT_HELD, status expired, and the old holder hears lock.expired",
			setup: func(h *harness) topics.Command {
				acq := h.one(h.acquire("a", "alice", lease(0.2)))
				h.waitPast(acq.LockInfo.ExpiresAt.Time)
				return h.release("a", "alice")
			},
			code: topics.CodeNotHeld, status: topics.StatusExpired, owner: "alice",
			routes: []string{"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.alice lock.rejected"},
		},
		{
			name: "another owner's ended lease: NOT_HELD, status expired",
			setup: func(h *harness) topics.Command {
				acq := h.one(h.acquire("a", "alice", lease(0.2)))
				h.waitPast(acq.LockInfo.ExpiresAt.Time)
				return h.release("a", "bob")
			},
			code: topics.CodeNotHeld, status: topics.StatusExpired, owner: "alice",
			routes: []string{"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.bob lock.rejected"},
		},
	}
	type counts struct{ releasesAndGrants int64 }
	runRefusals(t, cases, func(h *harness) counts {
		return counts{h.scalar(`SELECT count(*) FROM lock_events WHERE type IN ('lock.released', 'lock.acquired')`)}
	}, func(t *testing.T, h *harness, tc refusalCase, before counts) {
		require.Equal(t, before.releasesAndGrants, h.scalar(`SELECT count(*) FROM lock_events WHERE type IN ('lock.released', 'lock.acquired')`),
			"a refused release neither releases nor grants")
		if tc.status == topics.StatusFree {
			require.Zero(t, h.scalar(`SELECT count(*) FROM locks`), "a release creates no row")
		}
	})
}

func TestReleaseWithCorrectTokenAfterMismatch(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice"))
	tok := acq.LockInfo.FencingToken
	require.Equal(t, topics.CodeTokenMismatch, h.one(h.release("a", "alice", token(tok-1))).ErrorCode)
	ev := h.one(h.release("a", "alice", token(tok)))
	require.Equal(t, topics.TypeReleased, ev.Type)
	require.Equal(t, tok, ev.LockInfo.FencingToken)
}

func TestReleaseGrantsNextWaiter(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice"))
	bob := h.acquire("a", "bob", wait(30), lease(12), func(c *topics.Command) { c.OwnerMetadata = []byte(`{"who":"bob"}`) })
	require.Equal(t, topics.TypeQueued, h.one(bob).Type)
	h.clearOutbox()

	rel := h.release("a", "alice")
	evs := h.apply(rel)
	require.Equal(t, []string{
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released",
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	}, h.routes(), "the waiter is granted in the release's transaction, after the release")
	require.Len(t, evs, 2)
	require.Equal(t, topics.TypeReleased, evs[0].Type)
	require.Equal(t, rel.RequestID, evs[0].RequestID)
	granted := evs[1]
	require.Equal(t, topics.TypeAcquired, granted.Type)
	require.Equal(t, bob.RequestID, granted.RequestID, "the grant answers the waiter's acquire")
	require.Equal(t, topics.OpAcquire, granted.Operation)
	li := granted.LockInfo
	require.Equal(t, "bob", li.OwnerID)
	require.Equal(t, topics.StatusAcquired, li.Status)
	require.Greater(t, li.FencingToken, acq.LockInfo.FencingToken)
	require.Equal(t, int64(2), li.AcquisitionCount)
	require.Equal(t, 12.0, li.LeaseDuration)
	require.JSONEq(t, `{"who":"bob"}`, string(li.OwnerMetadata))
	require.WithinDuration(t, li.AcquiredAt.Add(12*time.Second), li.ExpiresAt.Time, time.Microsecond)
	require.False(t, granted.OccurredAt.Before(evs[0].OccurredAt.Time))

	out := h.outbox()
	require.Equal(t, granted.EventID, out[2].Event.EventID)
	require.Equal(t, bob.RequestID, out[2].Headers["request_id"])
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice", "lock.acquired bob"}, h.history("a"))
	require.Equal(t, "bob acquired 0", h.scalarText(`SELECT owner_id || ' ' || status || ' ' || waiter_count FROM `+v1Locks+` WHERE lock_name = 'a'`))
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters`))
	require.Equal(t, granted.EventID, h.outcome(bob.RequestID).EventID, "the waiter's stored outcome is now its grant")

	// The new holder's lease is its own: it can release it, with its token.
	require.Equal(t, topics.TypeReleased, h.one(h.release("a", "bob", token(li.FencingToken))).Type)
}

func TestReleaseWithdrawsWaiter(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice"))
	bob := h.acquire("a", "bob", wait(30))
	require.Equal(t, 1, h.one(bob).QueuePosition)
	require.Equal(t, 2, h.one(h.acquire("a", "carol", wait(30))).QueuePosition)
	require.Equal(t, 3, h.one(h.acquire("a", "dave", wait(30))).QueuePosition)
	h.clearOutbox()

	rel := h.release("a", "bob")
	ev := h.one(rel)
	require.Equal(t, topics.TypeWithdrawn, ev.Type)
	require.True(t, ev.Success)
	require.Equal(t, rel.RequestID, ev.RequestID)
	require.Equal(t, "alice", ev.LockInfo.OwnerID, "the holder is untouched")
	require.Equal(t, []string{"locks.replies.bob lock.withdrawn", "locks.replies.bob lock.withdrawn"}, h.routes())
	out := h.outbox()
	require.Equal(t, rel.RequestID, out[0].Event.RequestID)
	require.Equal(t, bob.RequestID, out[1].Event.RequestID, "the waiting acquire gets its own final answer")
	require.Equal(t, topics.OpAcquire, out[1].Event.Operation)
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id = 'bob'`))
	require.Equal(t, int64(2), h.scalar(`SELECT waiter_count FROM locks WHERE lock_name = 'a'`))
	withdrawn := h.outcome(bob.RequestID)
	require.Equal(t, topics.TypeWithdrawn, withdrawn.Type, "the queued acquire's outcome is now the withdrawal")
	require.Equal(t, bob.RequestID, withdrawn.RequestID)

	// The queued acquire retried changes nothing: it does not queue again,
	// and its answer is the withdrawal again.
	again := h.apply(bob)
	require.Len(t, again, 1)
	require.Equal(t, topics.TypeWithdrawn, again[0].Type)
	require.Equal(t, out[1].Event.EventID, again[0].EventID)
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id = 'bob'`))

	// Withdrawn once, bob is neither holder nor waiter.
	require.Equal(t, topics.CodeNotOwner, h.one(h.release("a", "bob")).ErrorCode)

	// The rest of the queue moves on without bob.
	require.Equal(t, "carol", find(h.apply(h.release("a", "alice")), topics.TypeAcquired)[0].LockInfo.OwnerID)
	require.Equal(t, int64(1), h.scalar(`SELECT waiter_count FROM locks WHERE lock_name = 'a'`))
	// dave withdraws from the last place too.
	require.Equal(t, topics.TypeWithdrawn, h.one(h.release("a", "dave")).Type)
	require.Zero(t, h.scalar(`SELECT waiter_count FROM locks WHERE lock_name = 'a'`))
	evs := h.apply(h.release("a", "carol"))
	require.Len(t, evs, 1, "nobody waits any more: no grant")
	require.Equal(t, "released", h.scalarText(`SELECT status FROM locks WHERE lock_name = 'a'`))
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice", "lock.acquired carol", "lock.released carol"}, h.history("a"))
}

// TestReleaseByWaiterWhenLeaseEnded: the holder's lease has ended but nobody
// has said so yet, and the first waiter gives up. Ending the lease must not
// grant the lock to the waiter that is withdrawing in the same command.
func TestReleaseByWaiterWhenLeaseEnded(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(60)))
	bob := h.acquire("a", "bob", wait(30))
	h.one(bob)
	carol := h.acquire("a", "carol", wait(30))
	h.one(carol)
	h.endLeases(`owner_id = 'alice'`) // bob and carol queued behind it first
	h.clearOutbox()

	rel := h.release("a", "bob")
	evs := h.apply(rel)
	var answer topics.Event
	for _, ev := range evs {
		if ev.RequestID == rel.RequestID {
			answer = ev
		}
	}
	require.Equal(t, topics.TypeWithdrawn, answer.Type)
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.carol lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	}, filterRoutes(h.routes(), "lock.expired", "lock.acquired"))
	require.Contains(t, h.routes(), "locks.replies.bob lock.withdrawn")
	require.NotContains(t, h.routes(), "locks.lock.released.v1 lock.released")
	require.Equal(t, []string{"lock.acquired alice", "lock.expired alice", "lock.acquired carol"}, h.history("a"), "bob is never granted")
	require.Equal(t, "carol acquired 0", h.scalarText(`SELECT owner_id || ' ' || status || ' ' || waiter_count FROM `+v1Locks+` WHERE lock_name = 'a'`))
	require.Equal(t, topics.TypeWithdrawn, h.outcome(bob.RequestID).Type)
	require.Equal(t, topics.TypeAcquired, h.outcome(carol.RequestID).Type)
}

// filterRoutes keeps the routes of the given event types.
func filterRoutes(routes []string, types ...string) []string {
	var out []string
	for _, r := range routes {
		for _, typ := range types {
			if strings.HasSuffix(r, " "+typ) {
				out = append(out, r)
			}
		}
	}
	return out
}

// The holder learns that its lease ended on its own reply topic, whoever
// sent the release and wherever its answer goes (the common case and the
// general path alike).
func TestReleaseFromElsewhereTellsTheHolder(t *testing.T) {
	h := newHarness(t)
	for _, waiter := range []bool{false, true} { // a waiter takes the general path
		h.one(h.acquire("a", "alice"))
		if waiter {
			h.one(h.acquire("a", "bob", wait(30)))
		}
		h.clearOutbox()
		ev := h.one(h.release("a", "alice", func(c *topics.Command) { c.ReplyTo = "locks.replies.mallory" }))
		require.Equal(t, topics.TypeReleased, ev.Type)
		routes := h.routes()
		require.Subset(t, routes, []string{"locks.replies.mallory lock.released", "locks.replies.alice lock.released",
			"locks.lock.released.v1 lock.released"}, "waiter %v", waiter)
		h.clearOutbox()
		// Without a reply_to of its own, the release is still told to the holder.
		h.one(h.acquire("a", "carol"))
		if waiter {
			h.one(h.release("a", "bob"))
			h.one(h.acquire("a", "carol"))
		}
		h.clearOutbox()
		h.one(h.release("a", "carol", func(c *topics.Command) { c.ReplyTo = "" }))
		require.Contains(t, h.routes(), "locks.replies.carol lock.released")
		h.reset()
	}
}

// TestReleaseAfterAWaitPastExpiry: a release that waits for the lock's row
// (locked by a transaction that changes nothing, as a refused command
// does) until the lease's expiry has passed finds the lease ended: it is
// settled as expired, the waiter granted, and the release refused
// NOT_HELD. The time it is judged by is read once the row is locked.
func TestReleaseAfterAWaitPastExpiry(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("x", "alice", lease(60))).Type)
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("x", "bob", wait(60))).Type)
	h.clearOutbox()
	ev := h.waitingPast(`UPDATE lock_holders SET expires_at = clock_timestamp() + interval '3 seconds' WHERE lock_name = 'x' RETURNING expires_at`,
		`SELECT FROM locks WHERE lock_name = 'x' FOR UPDATE`, h.release("x", "alice"))
	require.Equal(t, topics.TypeRejected, ev.Type)
	require.Equal(t, topics.CodeNotHeld, ev.ErrorCode)
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
		"locks.replies.alice lock.rejected",
	}, h.routes())
	require.Equal(t, "bob", h.scalarText(`SELECT owner_id FROM lock_holders WHERE lock_name = 'x'`))
}

// A release carrying fields it does not use, with numbers past their type
// (read as +Inf, judged only where used), is applied as any release,
// sent ahead and inline.
func TestReleaseIgnoresNumbersPastTheirTypeInFieldsItDoesNotUse(t *testing.T) {
	h := newHarness(t)
	for _, ahead := range []bool{true, false} {
		acq := h.one(h.acquire("a", "alice"))
		require.Equal(t, topics.TypeAcquired, acq.Type)
		cmd, err := topics.Decode([]byte(`{"operation":"release","lock_name":"a","owner_id":"alice","request_id":"`+h.id()+
			`","extension_duration":1e400,"lease_duration":-1e999,"limit":123456789012345678901234567890}`), "locks.commands.v1")
		require.NoError(t, err)
		evs := h.run(ahead, []topics.Command{cmd})
		require.Equal(t, topics.TypeReleased, evs[len(evs)-1].Type, "ahead %v", ahead)
	}
}

// Fencing tokens past int4's range end as any other: the locks row's
// ended_fencing_token is written from an int8 (a statement typing it from
// its literal 0 as an int4 failed every batch ending such a lease, for
// good: pgx refuses to encode it, which no retry changes).
func TestLeaseWithATokenPastInt4Ends(t *testing.T) {
	h := newHarness(t)
	_, err := h.st.Pool.Exec(t.Context(), `SELECT setval('fencing_tokens', 2147483647)`)
	require.NoError(t, err)
	alice := h.one(h.acquire("a", "alice", lease(30)))
	require.Equal(t, topics.TypeAcquired, alice.Type)
	require.Greater(t, alice.LockInfo.FencingToken, int64(1<<31-1))
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("a", "bob", wait(30))).Type)
	require.Equal(t, topics.TypeReleased, h.one(h.release("a", "alice")).Type)
	var ended, holder int64
	require.NoError(t, h.st.Pool.QueryRow(t.Context(), `SELECT l.ended_fencing_token, h.fencing_token FROM locks l
		JOIN lock_holders h USING (namespace, lock_name) WHERE l.lock_name = 'a' AND h.owner_id = 'bob'`).Scan(&ended, &holder))
	require.Equal(t, alice.LockInfo.FencingToken, ended)
	require.Equal(t, alice.LockInfo.FencingToken+1, holder)
}
