package handlers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func lockDelay(s float64) func(*topics.Command) { return func(c *topics.Command) { c.LockDelay = s } }
func maxHold(s float64) func(*topics.Command)   { return func(c *topics.Command) { c.MaxHold = s } }

func (h *harness) revoke(lock, owner, reason string) topics.Command {
	return topics.Command{RequestID: h.id(), Operation: topics.OpRevoke, LockName: lock, OwnerID: owner, Reason: reason,
		ReplyTo: "locks.replies.admin"}
}

// delayUntil reads a lock's delay_until (zero: none).
func (h *harness) delayUntil(lock string) time.Time {
	h.t.Helper()
	var t *time.Time
	require.NoError(h.t, h.st.Pool.QueryRow(h.t.Context(), `SELECT delay_until FROM locks WHERE lock_name = $1`, lock).Scan(&t))
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// TestLockDelayAfterExpiryNotAfterRelease: a lease with a lock_delay that
// runs out keeps the lock from every grant (waiters, the common cases, a
// reader joining readers) until the delay passes, then the scheduler hands
// it to the waiters; a released one does not.
func TestLockDelayAfterExpiryNotAfterRelease(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(60), lockDelay(1)))
	bob := h.acquire("a", "bob", wait(30))
	require.Equal(t, topics.TypeQueued, h.one(bob).Type)
	h.one(h.acquire("b", "alice", lease(60), lockDelay(1)))
	h.one(h.acquire("rw", "r1", lease(60), lockDelay(1), shared))
	h.one(h.acquire("rw", "r2", lease(30), shared))

	h.endLeases(`owner_id IN ('alice', 'r1')`) // bob queued and r2 joined while they held
	h.clearOutbox()
	require.Equal(t, 3, h.expireDue())
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.r1 lock.expired", "locks.lock.expired.v1 lock.expired",
	}, h.routes(), "bob stays queued")
	until := h.delayUntil("a")
	require.False(t, until.IsZero())
	at, ok := h.nextDue(0)
	require.True(t, ok)
	require.False(t, at.After(until), "the scheduler looks again when the delay ends")

	// Every way to the lock is shut: the general path, a grant at once and
	// a reader joining a reader at once, sent ahead or inline.
	for _, apply := range []func(...topics.Command) []topics.Event{h.apply, h.applyInline} {
		for _, c := range []topics.Command{h.acquire("a", "carol"), h.acquire("b", "carol"), h.acquire("rw", "r3", shared)} {
			evs := apply(c)
			require.Len(t, evs, 1)
			ev := evs[0]
			require.Equal(t, topics.CodeLockHeld, ev.ErrorCode, c.LockName)
			require.Contains(t, ev.ErrorMessage, "lock-delay")
			require.NotNil(t, ev.RetryAfterSeconds)
			require.Greater(t, *ev.RetryAfterSeconds, 0.0)
			require.LessOrEqual(t, *ev.RetryAfterSeconds, 1.0)
		}
	}
	st := h.one(h.query("b"))
	require.NotNil(t, st.LockInfo.DelayUntil)
	require.Equal(t, h.delayUntil("b"), st.LockInfo.DelayUntil.Time)
	cl := h.one(h.cleanup("b", maxAge(0)))
	require.Zero(t, *cl.CleanedCount, "a row in its lock-delay is not idle")

	h.waitPast(h.delayUntil("rw")) // all three started together
	h.clearOutbox()
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, []string{"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired"}, h.routes())
	require.True(t, h.delayUntil("a").IsZero())
	require.True(t, h.delayUntil("b").IsZero(), "a delay that passed is cleared, waiters or not")
	require.True(t, h.delayUntil("rw").IsZero())
	_, ok = h.nextDue(0)
	require.True(t, ok, "r2's lease")
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("rw", "r3", shared)).Type)

	// A release starts no delay: the next acquire is granted at once.
	h.one(h.release("a", "bob"))
	h.one(h.acquire("a", "dave", lockDelay(1)))
	require.Equal(t, topics.TypeReleased, h.one(h.release("a", "dave")).Type)
	require.True(t, h.delayUntil("a").IsZero())
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("a", "erin")).Type)
}

// TestMaxHold: extensions (at once or not) and renewals cannot carry a lease
// past acquired_at + max_hold; a lease_duration above it is cut to it; a
// waiter's max_hold holds for the lease it is granted.
func TestMaxHold(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice", lease(10), maxHold(25)))
	require.Equal(t, 10.0, acq.LockInfo.LeaseDuration)
	ext := h.one(h.extend("a", "alice", extendBy(10)))
	require.Equal(t, topics.TypeExtended, ext.Type)
	ext = h.one(h.extend("a", "alice", extendBy(5)))
	require.Equal(t, topics.TypeExtended, ext.Type, "to the cap itself")
	require.Equal(t, acq.LockInfo.AcquiredAt.Add(25*time.Second), ext.LockInfo.ExpiresAt.Time)
	for _, apply := range []func(...topics.Command) []topics.Event{h.apply, h.applyInline} {
		evs := apply(h.extend("a", "alice", extendBy(0.1)))
		require.Len(t, evs, 1)
		require.Equal(t, topics.CodeMaxHoldExceeded, evs[0].ErrorCode)
		require.Contains(t, evs[0].ErrorMessage, "max_hold")
		require.Equal(t, "alice", evs[0].LockInfo.OwnerID)
	}
	require.Equal(t, ext.LockInfo.ExpiresAt.Time, h.timeOf(`SELECT expires_at FROM lock_holders WHERE lock_name = 'a'`), "unchanged")
	require.Equal(t, topics.CodeMaxHoldExceeded, h.one(h.acquire("a", "alice", lease(30))).ErrorCode, "a renewal is capped too")

	capped := h.one(h.acquire("b", "alice", lease(60), maxHold(20)))
	require.Equal(t, 20.0, capped.LockInfo.LeaseDuration)
	require.Equal(t, capped.LockInfo.AcquiredAt.Add(20*time.Second), capped.LockInfo.ExpiresAt.Time)
	require.Equal(t, topics.CodeMaxHoldExceeded, h.one(h.extend("b", "alice")).ErrorCode)

	h.one(h.acquire("c", "alice"))
	h.one(h.acquire("c", "bob", wait(30), lease(10), maxHold(12)))
	h.one(h.release("c", "alice"))
	require.Equal(t, topics.TypeExtended, h.one(h.extend("c", "bob", extendBy(2))).Type)
	require.Equal(t, topics.CodeMaxHoldExceeded, h.one(h.extend("c", "bob", extendBy(1))).ErrorCode)

	// The refusal shows the lease it refused, whose expiry and room its
	// holder reads, not the lock's newest: a reader with a cap, then one
	// without.
	first := h.one(h.acquire("d", "alice", shared, lease(10), maxHold(12)))
	h.one(h.acquire("d", "bob", shared, lease(30)))
	refused := h.one(h.extend("d", "alice", extendBy(5)))
	require.Equal(t, topics.CodeMaxHoldExceeded, refused.ErrorCode)
	require.Equal(t, "alice", refused.LockInfo.OwnerID)
	require.Equal(t, first.LockInfo.FencingToken, refused.LockInfo.FencingToken)
	require.Equal(t, first.LockInfo.ExpiresAt.Time, refused.LockInfo.ExpiresAt.Time)
	renewal := h.one(h.acquire("d", "alice", shared, lease(20)))
	require.Equal(t, topics.CodeMaxHoldExceeded, renewal.ErrorCode, "a renewal past the cap")
	require.Equal(t, "alice", renewal.LockInfo.OwnerID)
}

// TestLockInfoShowsMaxHold: lock_info shows the cap of the lease it shows,
// on every path (at once or not): the grant, an extension, the refusal past
// the cap, a status, a waiter's queued answer (the holder's cap), a renewal
// (the lease's first cap, not the renewal's), a hand-off's grant (the
// waiter's); a lease without a cap shows none, also when its renewal asked
// for one, which the worker does not apply.
func TestLockInfoShowsMaxHold(t *testing.T) {
	h := newHarness(t)
	for i, apply := range []func(...topics.Command) []topics.Event{h.apply, h.applyInline} {
		answer := func(c topics.Command) topics.Event {
			t.Helper()
			for _, ev := range apply(c) {
				if ev.RequestID == c.RequestID {
					return ev
				}
			}
			t.Fatalf("no answer to %+v", c)
			return topics.Event{}
		}
		lock := func(name string) string { return fmt.Sprintf("%s%d", name, i) }
		require.Equal(t, 25.0, answer(h.acquire(lock("a"), "alice", lease(10), maxHold(25))).LockInfo.MaxHold, "grant")
		require.Equal(t, 25.0, answer(h.extend(lock("a"), "alice", extendBy(5))).LockInfo.MaxHold, "extension")
		refused := answer(h.extend(lock("a"), "alice", extendBy(60)))
		require.Equal(t, topics.CodeMaxHoldExceeded, refused.ErrorCode)
		require.Equal(t, 25.0, refused.LockInfo.MaxHold, "refusal")
		require.Equal(t, 25.0, answer(h.query(lock("a"))).LockInfo.MaxHold, "status")
		require.Equal(t, 25.0, answer(h.acquire(lock("a"), "bob", wait(30), maxHold(12))).LockInfo.MaxHold, "queued: the holder's")
		renewal := answer(h.acquire(lock("a"), "alice", lease(5), maxHold(40)))
		require.Equal(t, topics.TypeAcquired, renewal.Type)
		require.Equal(t, 25.0, renewal.LockInfo.MaxHold, "a renewal keeps the lease's cap")
		var handedOff *topics.Event
		for _, ev := range apply(h.release(lock("a"), "alice")) {
			if ev.Type == topics.TypeAcquired {
				handedOff = &ev
			}
		}
		require.NotNil(t, handedOff)
		require.Equal(t, "bob", handedOff.LockInfo.OwnerID)
		require.Equal(t, 12.0, handedOff.LockInfo.MaxHold, "the waiter's own cap")

		require.Zero(t, answer(h.acquire(lock("b"), "carol", lease(10))).LockInfo.MaxHold, "no cap")
		renewal = answer(h.acquire(lock("b"), "carol", lease(10), maxHold(1)))
		require.Equal(t, topics.TypeAcquired, renewal.Type)
		require.Zero(t, renewal.LockInfo.MaxHold, "a renewal's max_hold does not apply")
	}
}

// TestRevoke: the revoker is answered, each holder told on its reply topic
// and the lifecycle topic, the history keeps it, and the next waiter is
// granted; a revoke that ends nothing is NOT_HELD.
func TestRevoke(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice"))
	bob := h.acquire("a", "bob", wait(30))
	h.one(bob)
	h.clearOutbox()

	cmd := h.revoke("a", "", "maintenance")
	evs := h.apply(cmd)
	require.Equal(t, []string{
		"locks.replies.alice lock.revoked", "locks.lock.revoked.v1 lock.revoked",
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
		"locks.replies.admin lock.revoked",
	}, h.routes())
	told := h.outbox()[0].Event
	require.Equal(t, topics.OpRevoke, told.Operation)
	require.Empty(t, told.RequestID, "only the revoker's answer has it")
	require.Equal(t, "maintenance", told.Reason)
	require.Equal(t, "alice", told.LockInfo.OwnerID)
	require.Equal(t, topics.StatusRevoked, told.LockInfo.Status)
	require.Equal(t, acq.LockInfo.FencingToken, told.LockInfo.FencingToken)
	require.Zero(t, told.RevokedCount)

	ans := evs[len(evs)-1]
	require.Equal(t, topics.TypeRevoked, ans.Type)
	require.True(t, ans.Success)
	require.Equal(t, cmd.RequestID, ans.RequestID)
	require.Equal(t, 1, ans.RevokedCount)
	require.Equal(t, "maintenance", ans.Reason)
	require.Equal(t, "alice", ans.LockInfo.OwnerID)
	require.NotNil(t, h.outbox()[4].Event.DurationMS, "the revoker's own answer")
	require.Equal(t, []string{"lock.acquired alice", "lock.revoked alice", "lock.acquired bob"}, h.history("a"))
	h.resend(cmd, ans)

	// One owner's lease of several, then all the rest.
	h.one(h.acquire("rw", "r1", shared))
	h.one(h.acquire("rw", "r2", shared))
	h.one(h.acquire("rw", "r3", shared))
	require.Equal(t, topics.CodeNotHeld, h.one(h.revoke("rw", "nobody", "x")).ErrorCode)
	require.Equal(t, 1, h.one(h.revoke("rw", "r2", "x")).RevokedCount)
	all := h.one(h.revoke("rw", "", "x"))
	require.Equal(t, 2, all.RevokedCount)
	require.Equal(t, "r3", all.LockInfo.OwnerID, "the last lease it ended")
	require.Equal(t, "revoked", h.scalarText(`SELECT status FROM locks WHERE lock_name = 'rw'`))
	st := h.one(h.query("rw"))
	require.Equal(t, topics.StatusRevoked, st.LockInfo.Status)
	require.Equal(t, topics.CodeNotHeld, h.one(h.revoke("rw", "", "x")).ErrorCode)
	require.Equal(t, topics.CodeNotHeld, h.one(h.revoke("none", "", "x")).ErrorCode)
	cl := h.one(h.cleanup("rw", maxAge(0)))
	require.Equal(t, 1, *cl.CleanedCount, "a revoked row is idle like a released one")

	// A revoked lease with a lock_delay keeps the waiters queued.
	h.one(h.acquire("d", "alice", lockDelay(60)))
	h.one(h.acquire("d", "bob", wait(30)))
	h.clearOutbox()
	h.one(h.revoke("d", "alice", "stuck"))
	require.Equal(t, []string{"locks.replies.alice lock.revoked", "locks.lock.revoked.v1 lock.revoked", "locks.replies.admin lock.revoked"}, h.routes())
	require.False(t, h.delayUntil("d").IsZero())
}

// The first waiter of a lock in its lock-delay, with no holder left, sets
// the lock's limit: a later acquire with another limit is refused, and the
// mutex waiter holds the lock alone when the delay ends. The limit of the
// revoked semaphore it replaced must not let two exclusive holders in.
func TestLockDelaySetsLimitOfFirstWaiter(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("s", "a", limit(3), lockDelay(0.5))).Type)
	require.Equal(t, 1, h.one(h.revoke("s", "", "x")).RevokedCount)
	until := h.delayUntil("s")
	require.False(t, until.IsZero())

	require.Equal(t, topics.TypeQueued, h.one(h.acquire("s", "m", wait(30))).Type) // a mutex: limit 1
	sem := h.one(h.acquire("s", "b", limit(3), wait(30)))
	require.Equal(t, topics.CodeLimitMismatch, sem.ErrorCode, "got %s", sem.Type)

	h.waitPast(until)
	h.expireDue()
	require.Equal(t, []string{"m exclusive"}, h.texts(`SELECT owner_id || ' ' || mode FROM lock_holders WHERE lock_name = 's'`))
	require.EqualValues(t, 1, h.scalar(`SELECT lock_limit FROM locks WHERE lock_name = 's'`))
}

// TestPassedLockDelayClearedAtOnce: the one-statement join, extend and
// release (sent ahead or inline) of a lock whose lock-delay has passed
// clear delay_until in their own change, as the general path does
// (rules.Lock.Settle): the scheduler then finds nothing to do, and a
// refusal that follows changes nothing and shows that revision, with no
// state record.
func TestPassedLockDelayClearedAtOnce(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name string
		cmd  func(lock string) topics.Command
		typ  string
	}{
		{"join", func(lock string) topics.Command { return h.acquire(lock, "r3", shared) }, topics.TypeAcquired},
		{"extend", func(lock string) topics.Command { return h.extend(lock, "r2") }, topics.TypeExtended},
		{"release", func(lock string) topics.Command { return h.release(lock, "r2") }, topics.TypeReleased},
	} {
		for path, apply := range map[string]func(...topics.Command) []topics.Event{"ahead": h.apply, "inline": h.applyInline} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				lock := tc.name + " " + path
				h.one(h.acquire(lock, "r1", shared, lease(60), lockDelay(60)))
				h.one(h.acquire(lock, "r2", shared, lease(60)))
				require.Equal(t, 1, h.one(h.revoke(lock, "r1", "test")).RevokedCount)
				h.waitPast(h.timeOf(`UPDATE locks SET delay_until = clock_timestamp() WHERE lock_name = $1 RETURNING delay_until`, lock))
				rev := h.scalar(`SELECT revision FROM locks WHERE lock_name = $1`, lock)

				h.clearOutbox()
				evs := apply(tc.cmd(lock))
				require.Len(t, evs, 1)
				require.Equal(t, tc.typ, evs[0].Type, evs[0].ErrorMessage)
				require.Equal(t, rev+1, evs[0].LockInfo.Revision)
				require.True(t, h.delayUntil(lock).IsZero(), "cleared in the same change")
				states := h.states()
				require.Len(t, states, 1)
				require.Equal(t, rev+1, states[0].State.Revision)
				require.Nil(t, states[0].State.DelayUntil)

				h.clearOutbox()
				refused := h.one(h.release(lock, "x")) // the general path: it settles the lock first
				require.Equal(t, topics.TypeRejected, refused.Type)
				require.Equal(t, rev+1, refused.LockInfo.Revision)
				_, evs = h.expireDueEvents()
				require.Empty(t, evs)
				require.Empty(t, h.states(), "nothing changed")
				require.Equal(t, rev+1, h.scalar(`SELECT revision FROM locks WHERE lock_name = $1`, lock))
			})
		}
	}
}

// TestRevokeASessionLeasePastItsSessionsExpiry: a revoke finds a session's
// lease whose session is past its expiry, its end not seen yet. That lease
// has ended with its session: the holder is told lock.expired with reason
// session_expired, its lock-delay runs from the session's expiry, the
// revoke is answered NOT_HELD, and the session's end finds nothing of it.
// With a keep-alive of the session in flight, holding its row, the lease
// counts as in force (the keep-alive may renew the session) and is revoked.
func TestRevokeASessionLeasePastItsSessionsExpiry(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep-alive in flight %v", inFlight), func(t *testing.T) {
			h := newHarness(t)
			ctx := t.Context()
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
			held := h.one(h.acquire("l", "o", inSession("s"), lockDelay(10)))
			require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
			expiry := h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`)
			if inFlight {
				c, _ := h.blocker()
				_, err := c.Exec(ctx, `SELECT FROM sessions WHERE id = 's' FOR NO KEY UPDATE`)
				require.NoError(t, err)
				defer c.Exec(context.WithoutCancel(ctx), `ROLLBACK`)
			}
			h.waitPast(expiry)
			h.clearOutbox()
			ans := h.one(h.revoke("l", "", "ops"))
			if inFlight {
				require.Equal(t, topics.TypeRevoked, ans.Type)
				require.Equal(t, 1, ans.RevokedCount)
				require.Equal(t, []string{"locks.replies.o lock.revoked", "locks.lock.revoked.v1 lock.revoked",
					"locks.replies.admin lock.revoked"}, h.routes())
				require.True(t, h.delayUntil("l").After(expiry.Add(10*time.Second)), "from the revoke")
				return
			}
			require.Equal(t, topics.TypeRejected, ans.Type)
			require.Equal(t, topics.CodeNotHeld, ans.ErrorCode)
			require.Equal(t, []string{"locks.replies.o lock.expired", "locks.lock.expired.v1 lock.expired",
				"locks.replies.admin lock.rejected"}, h.routes())
			told := h.outbox()[0].Event
			require.Equal(t, topics.ReasonSessionExpired, told.Reason)
			require.Equal(t, topics.StatusExpired, told.LockInfo.Status)
			require.Equal(t, held.LockInfo.FencingToken, told.LockInfo.FencingToken)
			require.Equal(t, expiry.Add(10*time.Second), h.delayUntil("l"), "from the session's expiry")
			_, evs := h.expireDueEvents()
			require.Zero(t, find(evs, topics.TypeSessionExpired)[0].SessionInfo.Leases, "its end finds nothing of it")
		})
	}
}

// TestNoOvertakeOnceTheLockDelayPassed: once a lock-delay has passed but
// before the scheduler hands the lock on, a new acquire does not take it
// ahead of the waiter the delay held back: the waiter is granted, the
// newcomer refused, sent ahead or inline.
func TestNoOvertakeOnceTheLockDelayPassed(t *testing.T) {
	base := newHarness(t)
	for _, ahead := range []bool{true, false} {
		h := base.fresh()
		apply := h.apply
		if !ahead {
			apply = h.applyInline
		}
		h.one(h.acquire("d", "alice", lease(60), lockDelay(0.5)))
		require.Equal(t, topics.TypeQueued, h.one(h.acquire("d", "bob", wait(120))).Type)
		h.endLeases(`owner_id = 'alice'`)
		require.Equal(t, 1, h.expireDue()) // alice's lease ends; the delay holds bob back
		h.waitPast(h.delayUntil("d"))
		evs := apply(h.acquire("d", "carol"))
		require.Equal(t, []string{"bob exclusive"}, grants(evs), "bob is granted first (ahead %v)", ahead)
		refused := find(evs, topics.TypeRejected)
		require.Len(t, refused, 1)
		require.Equal(t, topics.CodeLockHeld, refused[0].ErrorCode)
	}
}
