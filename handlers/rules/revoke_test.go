package rules

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// acquireWith is acquire with a lock-delay and a max_hold.
func (m *model) acquireWith(owner string, lease, wait, lockDelay, maxHold float64) []Effect {
	l := m.lock(owner)
	effs := l.Acquire(Request{Owner: owner, Mode: Exclusive, Limit: 1, Lease: lease, Wait: wait, RequestID: "req-" + owner,
		Key: "/k", LockDelay: lockDelay, MaxHold: maxHold})
	m.save(l, effs)
	return effs
}

func (m *model) revoke(owner string) []Effect {
	l := m.lock("")
	effs := l.Revoke(owner, "/k")
	m.save(l, effs)
	return effs
}

func TestLockDelayAfterExpiryNotAfterRelease(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant a", kinds(m.acquireWith("a", 10, 0, 5, 0)))
	require.Equal(t, "queue w", kinds(m.acquireWith("w", 10, 60, 0, 0)))
	m.advance(10 * time.Second)
	// The lease ran out: the waiter stays queued through the delay.
	require.Equal(t, "expire a", kinds(m.expire()))
	require.Equal(t, m.now.Add(5*time.Second), m.DelayUntil)
	effs := m.acquireWith("b", 10, 0, 0, 0)
	require.Equal(t, "refuse LOCK_HELD", kinds(effs))
	require.Equal(t, 5*time.Second, effs[0].RetryAfter)
	require.Contains(t, effs[0].Message, "lock-delay")
	m.advance(5 * time.Second)
	require.Equal(t, "grant w", kinds(m.expire()))
	require.True(t, m.DelayUntil.IsZero())

	// The delay runs from the lease's end, not from when its expiry is seen
	// (a replica taking the partition over, seconds later).
	m.advance(12 * time.Second)
	require.Equal(t, "expire w", kinds(m.expire()))
	require.True(t, m.DelayUntil.IsZero(), "w had no lock-delay")
	require.Equal(t, "grant e", kinds(m.acquireWith("e", 10, 0, 5, 0)))
	m.advance(13 * time.Second)
	require.Equal(t, "expire e", kinds(m.expire()))
	require.Equal(t, m.now.Add(2*time.Second), m.DelayUntil, "ended 3 s ago: 2 s of its 5 left")
	m.advance(2 * time.Second)
	require.Equal(t, "grant w", kinds(m.acquireWith("w", 10, 0, 0, 0)))
	require.Equal(t, "release w", kinds(m.release("w", nil)))
	// An expiry seen after the delay would have ended starts none.
	require.Equal(t, "grant f", kinds(m.acquireWith("f", 10, 0, 5, 0)))
	m.advance(20 * time.Second)
	require.Equal(t, "expire f", kinds(m.expire()))
	require.True(t, m.DelayUntil.IsZero(), "its delay ended 5 s ago")
	require.Equal(t, "grant w", kinds(m.acquireWith("w", 10, 0, 0, 0)))

	// A release starts no delay.
	require.Equal(t, "release w", kinds(m.release("w", nil)))
	require.Equal(t, "grant c", kinds(m.acquireWith("c", 10, 0, 5, 0)))
	require.Equal(t, "release c", kinds(m.release("c", nil)))
	require.Equal(t, "grant d", kinds(m.acquireWith("d", 10, 0, 0, 0)))
}

func TestMaxHoldCapsExtendsAndRenewals(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant a", kinds(m.acquireWith("a", 10, 0, 0, 25)))
	require.Equal(t, "extend a", kinds(m.extend("a", nil, 10))) // to 20
	require.Equal(t, "extend a", kinds(m.extend("a", nil, 5)))  // to 25: the cap itself
	require.Equal(t, "refuse MAX_HOLD_EXCEEDED", kinds(m.extend("a", nil, 0.1)))
	m.advance(20 * time.Second)
	// A renewal carries the lease to now + lease: 30 s, past the cap.
	require.Equal(t, "refuse MAX_HOLD_EXCEEDED", kinds(m.acquireWith("a", 10, 0, 0, 0)))
	require.Equal(t, "renew a", kinds(m.acquireWith("a", 5, 0, 0, 0)))
	require.Equal(t, m.now.Add(5*time.Second), m.Holders[0].ExpiresAt)
}

func TestRevokeEndsLeasesStartsDelayAndHandsOff(t *testing.T) {
	m := newModel(t)
	l := m.lock("")
	require.Equal(t, "refuse NOT_HELD", kinds(l.Revoke("", "/k")))
	require.Equal(t, "grant r1", kinds(m.acquire("r1", Shared, 1, 30, 0)))
	require.Equal(t, "grant r2", kinds(m.acquire("r2", Shared, 1, 30, 0)))
	require.Equal(t, "queue w", kinds(m.acquire("w", Exclusive, 1, 30, 60)))
	require.Equal(t, "refuse NOT_HELD", kinds(m.revoke("w")))
	require.Equal(t, "revoke r1", kinds(m.revoke("r1")))
	effs := m.revoke("")
	require.Equal(t, "revoke r2, grant w", kinds(effs))
	require.Equal(t, Revoked, effs[0].Info.Status)
	require.Equal(t, Revoked, m.EndedStatus)

	require.Equal(t, "queue x", kinds(m.acquire("x", Exclusive, 1, 30, 60)))
	require.Equal(t, "revoke w, grant x", kinds(m.revoke("")), "w had no lock-delay")
	// A revoked lease with a lock-delay keeps the waiters queued.
	m.Holders[0].LockDelay = 2
	require.Equal(t, "queue y", kinds(m.acquire("y", Exclusive, 1, 30, 60)))
	require.Equal(t, "revoke x", kinds(m.revoke("x")))
	require.Equal(t, "", kinds(m.expire()))
	m.advance(2 * time.Second)
	require.Equal(t, "grant y", kinds(m.expire()))
}

// A session that expires starts its leases' lock-delays (the holder did not
// let go); one that is closed does not (it did), as a release.
func TestLockDelayAfterSessionLossNotAfterClose(t *testing.T) {
	for _, reason := range []string{ReasonSessionExpired, ReasonSessionClosed} {
		m := newModel(t)
		l := m.lock("a")
		effs := l.Acquire(Request{Owner: "a", Mode: Exclusive, Limit: 1, Lease: 1, RequestID: "req-a", Key: "/k",
			Session: "s", SessionExpires: m.now.Add(time.Hour), LockDelay: 5})
		m.save(l, effs)
		require.Equal(t, "queue w", kinds(m.acquireWith("w", 10, 60, 0, 0)))
		if reason == ReasonSessionExpired {
			require.Equal(t, "lose a", kinds(m.endSession("s", "a", reason)), "w waits for the lock-delay")
			m.advance(5 * time.Second)
			require.Equal(t, "grant w", kinds(m.expire()))
		} else {
			require.Equal(t, "lose a, grant w", kinds(m.endSession("s", "a", reason)))
		}
	}
}

// A lease with a max_hold cannot be handed to a session, which would keep
// it alive past any cap.
func TestMaxHoldLeaseNotKeptBySession(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant a", kinds(m.acquireWith("a", 10, 0, 0, 60)))
	require.Equal(t, "refuse MAX_HOLD_EXCEEDED", kinds(m.acquireIn("s", "a", Exclusive, 0)))
	require.Empty(t, m.Holders[0].Session)
}

// A revoke of a lock whose only lease ran out (not yet swept) ends that
// lease and hands the lock to the waiter once: the waiter keeps its grant,
// and the revoke, which found nothing in force, is refused NOT_HELD.
func TestRevokeDoesNotRevokeTheWaiterItGrants(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant a", kinds(m.acquireWith("a", 10, 0, 0, 0)))
	require.Equal(t, "queue w", kinds(m.acquireWith("w", 10, 60, 0, 0)))
	m.advance(11 * time.Second)
	require.Equal(t, "expire a, grant w, refuse NOT_HELD", kinds(m.revoke("")))
	require.Equal(t, "revoke w", kinds(m.revoke("")), "w holds the lock")
}

// TestLockDelayWithOnlyLapsedWaiters: in a lock-delay, waiters whose
// deadlines have passed wait for no one, so an acquire with another limit
// is queued under its own, not refused LIMIT_MISMATCH.
func TestLockDelayWithOnlyLapsedWaiters(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant a", kinds(m.acquireWith("a", 10, 0, 5, 0)))
	require.Equal(t, "queue w", kinds(m.acquireWith("w", 10, 12, 0, 0)))
	m.advance(10 * time.Second)
	require.Equal(t, "expire a", kinds(m.expire()))
	m.advance(3 * time.Second) // w's deadline passed; the delay runs to + 15 s
	require.Equal(t, "refuse LOCK_HELD", kinds(m.acquire("b", Exclusive, 2, 10, 0)), "nothing is granted in the delay")
	require.Equal(t, "timeout w, queue b", kinds(m.acquire("b", Exclusive, 2, 10, 60)))
	require.Equal(t, 2, m.Limit)
	m.advance(2 * time.Second)
	require.Equal(t, "grant b", kinds(m.expire()))
}

// A revoke does not revoke a session's lease whose session is past its
// expiry, its end not seen yet: that lease has ended with its session,
// and the revoke ends it as the session's end would (lock.expired,
// session_expired, its lock-delay from the session's expiry), then revokes
// what is left, answering NOT_HELD when nothing is. Asked again, a session
// renewed meanwhile, or with a keep-alive or its end in flight, keeps its
// lease in force, and the revoke revokes it. A revoke of another owner
// leaves the lease to its session's end.
func TestRevokeASessionLeasePastItsSessionsExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		owner string // of the revoke
		live  bool   // as SessionLive answers (nil when false)
		want  string
	}{
		{"every lease", "", false, "lose o, revoke x"},
		{"its owner's", "o", false, "lose o, refuse NOT_HELD"},
		{"another owner's", "x", false, "revoke x"},
		{"renewed or in flight", "o", true, "revoke o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t)
			expiry := m.now.Add(5 * time.Second)
			l := m.lock("o")
			effs := l.Acquire(Request{Owner: "o", Mode: Exclusive, Limit: 2, Lease: 30, RequestID: "req-o", Key: "/k",
				Session: "s", SessionExpires: expiry, LockDelay: 10})
			m.save(l, effs)
			require.Equal(t, "grant x", kinds(m.acquire("x", Exclusive, 2, 60, 0)))
			m.advance(5500 * time.Millisecond)
			l = m.lock("")
			if tc.live {
				l.SessionLive = func(string) (time.Time, bool) { return m.now.Add(time.Minute), true }
			}
			effs = l.Revoke(tc.owner, "/k")
			m.save(l, effs)
			require.Equal(t, tc.want, kinds(effs))
			switch {
			case tc.live:
				require.Equal(t, Revoked, effs[0].Info.Status)
				require.Equal(t, m.now.Add(10*time.Second), m.DelayUntil, "from the revoke")
			case tc.owner == "x":
				require.Equal(t, []string{"o"}, []string{m.Holders[0].Owner})
				require.Equal(t, "lose o", kinds(m.endSession("s", "", ReasonSessionExpired)))
			default:
				require.Equal(t, ReasonSessionExpired, effs[0].Reason)
				require.Equal(t, Expired, effs[0].Info.Status)
				require.Equal(t, expiry.Add(10*time.Second), m.DelayUntil, "from the session's expiry")
				require.Empty(t, kinds(m.endSession("s", "", ReasonSessionExpired)), "its end finds nothing of it")
			}
		})
	}
}
