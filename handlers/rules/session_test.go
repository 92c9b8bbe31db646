package rules

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// acquireIn is an acquire in session id (which expires in an hour).
func (m *model) acquireIn(id, owner string, mode Mode, wait float64) []Effect {
	l := m.lock(owner)
	effs := l.Acquire(Request{Owner: owner, Mode: mode, Limit: 1, Lease: 1, Wait: wait, RequestID: "req-" + owner, Key: "/k",
		Session: id, SessionExpires: m.now.Add(time.Hour)})
	m.save(l, effs)
	return effs
}

func (m *model) endSession(id, owner, reason string) []Effect {
	return m.endSessions(owner, reason, id)
}

// endSessions ends the sessions ids together, the lock loaded for owner.
func (m *model) endSessions(owner, reason string, ids ...string) []Effect {
	l := m.lock(owner)
	effs := l.EndSessions(ids, m.SessionWaits(ids...), reason)
	m.save(l, effs)
	return effs
}

func TestSessionLeaseOutlivesItsDuration(t *testing.T) {
	m := newModel(t)
	effs := m.acquireIn("s1", "o", Exclusive, 0)
	require.Equal(t, "grant o", kinds(effs))
	require.Equal(t, "s1", effs[0].Holder.Session)
	require.Equal(t, m.now.Add(time.Hour), effs[0].Holder.ExpiresAt, "shows the session's expiry")
	m.advance(2 * time.Hour) // past its lease and the expiry it showed
	require.Empty(t, kinds(m.expire()), "only the session's end ends it")
	require.Equal(t, Acquired, m.lock("").Info().Status)
	require.Equal(t, "refuse SESSION_BOUND", kinds(m.extend("o", nil, 0)))
	// A renewal without the session, the session kept alive (its holder
	// shows the expiry the loader reads), gives the lease its own expiry.
	m.Holders[0].ExpiresAt = m.now.Add(time.Minute)
	effs = m.acquire("o", Exclusive, 1, 30, 0)
	require.Equal(t, "renew o", kinds(effs))
	require.Empty(t, effs[0].Holder.Session)
	require.Equal(t, m.now.Add(30*time.Second), effs[0].Holder.ExpiresAt)
	require.Equal(t, "renew o", kinds(m.acquireIn("s2", "o", Exclusive, 0)))
	require.Equal(t, "s2", m.Holders[0].Session)
	require.Empty(t, kinds(m.endSession("s1", "o", ReasonSessionClosed)), "no longer s1's")
	effs = m.endSession("s2", "o", ReasonSessionExpired)
	require.Equal(t, "lose o", kinds(effs))
	require.Equal(t, ReasonSessionExpired, effs[0].Reason)
	require.Equal(t, Expired, effs[0].Info.Status)
	require.Equal(t, Expired, m.EndedStatus)
}

func TestEndSessionHandsOff(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant r1", kinds(m.acquireIn("s1", "r1", Shared, 0)))
	require.Equal(t, "grant r2", kinds(m.acquire("r2", Shared, 1, 30, 0)))
	require.Equal(t, "queue w", kinds(m.acquire("w", Exclusive, 1, 30, 60)))
	effs := m.endSession("s1", "r1", ReasonSessionClosed)
	require.Equal(t, "lose r1", kinds(effs), "the writer waits for r2")
	require.Equal(t, Released, effs[0].Info.Status)
	require.Equal(t, ReasonSessionClosed, effs[0].Reason)
	require.Equal(t, "release r2, grant w", kinds(m.release("r2", nil)))
}

// The session's wait is withdrawn before anything is handed off, so the
// end never grants the session a lock; another session's wait of the same
// owner stays.
func TestEndSessionWithdrawsItsWait(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant h", kinds(m.acquire("h", Exclusive, 1, 1, 0)))
	require.Equal(t, "queue o", kinds(m.acquireIn("s1", "o", Exclusive, 60)))
	require.Equal(t, "queue p", kinds(m.acquire("p", Exclusive, 1, 30, 60)))
	require.Empty(t, kinds(m.endSession("s2", "o", ReasonSessionClosed)))
	m.advance(2 * time.Second) // h's lease has run out: the end settles it
	effs := m.endSession("s1", "o", ReasonSessionExpired)
	require.Equal(t, "drop o, expire h, grant p", kinds(effs))
	require.Equal(t, ReasonSessionExpired, effs[0].Reason)
	require.Empty(t, m.Queue)
}

// Sessions that end together on one lock: the waiting one's wait is
// dropped before the holding one's lease ends, so the lock goes past both
// to the next live waiter.
func TestEndSessionsTogether(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant a", kinds(m.acquireIn("s1", "a", Exclusive, 0)))
	require.Equal(t, "queue b", kinds(m.acquireIn("s2", "b", Exclusive, 60)))
	require.Equal(t, "queue p", kinds(m.acquire("p", Exclusive, 1, 30, 60)))
	effs := m.endSessions("", ReasonSessionExpired, "s1", "s2")
	require.Equal(t, "drop b, lose a, grant p", kinds(effs))
	require.Equal(t, "s2", effs[0].Waiter.Session)
	require.Equal(t, "s1", effs[1].Holder.Session)
	require.Equal(t, []string{"p"}, []string{m.Holders[0].Owner})
	require.Empty(t, m.Queue)
}

// A hand-off never grants a wait whose session is past its expiry but not
// yet ended by its scheduler: it drops it (lock.withdrawn, session_expired)
// and goes on to the next waiter. Asked again, a session a keep-alive has
// renewed meanwhile is granted, its lease showing the new expiry, and so
// is one whose keep-alive or end is in flight (which settles it).
func TestHandOffAndAnExpiredSessionsWait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		expires time.Duration // from now, as SessionLive reads it
		live    bool
		want    string
	}{
		{"ended", -time.Hour, false, "release h, drop o, grant p"},
		{"gone", 0, false, "release h, drop o, grant p"},
		{"renewed meanwhile", time.Minute, true, "release h, grant o"},
		{"in flight", -time.Hour, true, "release h, grant o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t)
			require.Equal(t, "grant h", kinds(m.acquire("h", Exclusive, 1, 3*3600, 0)))
			require.Equal(t, "queue o", kinds(m.acquireIn("s1", "o", Exclusive, 4*3600)))
			require.Equal(t, "queue p", kinds(m.acquire("p", Exclusive, 1, 30, 4*3600)))
			m.advance(2 * time.Hour) // s1's expiry (an hour) has passed; h's lease has not
			l := m.lock("h")
			var asked []string
			l.SessionLive = func(id string) (time.Time, bool) {
				asked = append(asked, id)
				if tc.name == "gone" {
					return time.Time{}, false
				}
				return m.now.Add(tc.expires), tc.live
			}
			effs := l.Release("h", "/k", nil, false)
			m.save(l, effs)
			require.Equal(t, tc.want, kinds(effs))
			require.Equal(t, []string{"s1"}, asked)
			if tc.live {
				require.Equal(t, m.now.Add(tc.expires), effs[1].Holder.ExpiresAt)
				return
			}
			require.Equal(t, ReasonSessionExpired, effs[1].Reason)
			require.Empty(t, m.Queue)
			// Its session's end then finds nothing of it on the lock.
			require.Empty(t, kinds(m.endSession("s1", "o", ReasonSessionExpired)))
		})
	}
}

// An acquire by the holder of a session's lease after the session's
// expiry, before its end was seen, renews nothing: the lease ended with
// the session (lock.expired, session_expired; its lock-delay from the
// session's expiry), and the acquire is a new one, which that delay may
// refuse or queue.
func TestAcquireAfterItsSessionsExpiry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		delay   float64
		session string // of the acquire
		wait    float64
		want    string
	}{
		{"without session, lock-delay", 10, "", 0, "lose o, refuse LOCK_HELD"},
		{"without session, lock-delay, waiting", 10, "", 60, "lose o, queue o"},
		{"without session", 0, "", 0, "lose o, grant o"},
		{"in another session", 0, "s2", 0, "lose o, grant o"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t)
			expiry := m.now.Add(5 * time.Second)
			l := m.lock("o")
			effs := l.Acquire(Request{Owner: "o", Mode: Exclusive, Limit: 1, Lease: 30, RequestID: "req-o", Key: "/k",
				Session: "s", SessionExpires: expiry, LockDelay: tc.delay})
			m.save(l, effs)
			token := effs[0].Holder.Token
			m.advance(5500 * time.Millisecond)
			require.Empty(t, kinds(m.expire()), "only its session's end, or its owner, ends it")
			l = m.lock("o")
			effs = l.Acquire(Request{Owner: "o", Mode: Exclusive, Limit: 1, Lease: 30, Wait: tc.wait, RequestID: "req-o2", Key: "/k",
				Session: tc.session, SessionExpires: m.now.Add(time.Hour)})
			m.save(l, effs)
			require.Equal(t, tc.want, kinds(effs))
			require.Equal(t, ReasonSessionExpired, effs[0].Reason)
			require.Equal(t, Expired, effs[0].Info.Status)
			require.Equal(t, token, effs[0].Info.Holder.Token)
			switch effs[1].Kind {
			case Grant:
				require.Greater(t, effs[1].Holder.Token, token, "a new lease")
				require.Equal(t, tc.session, effs[1].Holder.Session)
			case Refuse:
				require.Equal(t, expiry.Add(10*time.Second), m.DelayUntil, "from the session's expiry")
				require.Equal(t, 9500*time.Millisecond, effs[1].RetryAfter)
			}
			require.Empty(t, kinds(m.endSession("s", "o", ReasonSessionExpired)), "its end finds nothing of it")
		})
	}
}

// A session's lease past its session's expiry, its end not seen yet,
// still holds the lock, but LOCK_HELD's RetryAfter is never negative: 0,
// or the lock-delay's end when that is later.
func TestRetryAfterPastASessionsExpiry(t *testing.T) {
	m := newModel(t)
	require.Equal(t, "grant o", kinds(m.acquireIn("s", "o", Exclusive, 0)))
	m.advance(2 * time.Hour) // an hour past the session's expiry
	effs := m.acquire("p", Exclusive, 1, 30, 0)
	require.Equal(t, "refuse LOCK_HELD", kinds(effs))
	require.Zero(t, effs[0].RetryAfter)
	m.DelayUntil = m.now.Add(3 * time.Second)
	require.Equal(t, 3*time.Second, m.acquire("p", Exclusive, 1, 30, 0)[0].RetryAfter)
}

// A session's end hands the lock on once, after its leases have ended:
// with a semaphore of 2, a plain lease that ran out after the session's
// expiry frees a place, but the session's lease, ending with a lock-delay
// from the session's expiry, keeps the waiter out of it.
func TestEndSessionHandsOffOnceItsLeasesEnd(t *testing.T) {
	m, expiry := lapsedSemaphore(t)
	effs := m.endSession("s", "", ReasonSessionExpired)
	require.Equal(t, "expire x, lose o", kinds(effs), "w is not granted inside o's lock-delay")
	require.Equal(t, expiry.Add(30*time.Second), m.DelayUntil)
	require.Len(t, m.Queue, 1)
	m.now = m.DelayUntil
	require.Equal(t, "grant w", kinds(m.expire()))
}

// An acquire by the holder of a lease whose session is past its expiry
// ends that lease as the session's end would, and hands the lock on once,
// after: with a semaphore of 2, a plain lease that ran out after the
// session's expiry frees a place, but the lapsed lease, ending with a
// lock-delay from the session's expiry, keeps the waiter out of it.
func TestAcquireHandsOffOnceItsLapsedLeaseEnds(t *testing.T) {
	m, expiry := lapsedSemaphore(t)
	effs := m.acquire("o", Exclusive, 2, 30, 60)
	require.Equal(t, "expire x, lose o, queue o", kinds(effs), "w is not granted inside o's lock-delay")
	require.Equal(t, expiry.Add(30*time.Second), m.DelayUntil)
	require.Len(t, m.Queue, 2)
	m.now = m.DelayUntil
	require.Equal(t, "grant w, grant o", kinds(m.expire()))
}

// lapsedSemaphore is a semaphore of 2 held by o, in session s with a
// lock-delay of 30 s, and by x, with w waiting, 7 s on: past the session's
// expiry (returned), 5 s on, then x's.
func lapsedSemaphore(t *testing.T) (*model, time.Time) {
	t.Helper()
	m := newModel(t)
	expiry := m.now.Add(5 * time.Second)
	l := m.lock("o")
	effs := l.Acquire(Request{Owner: "o", Mode: Exclusive, Limit: 2, Lease: 30, RequestID: "req-o", Key: "/k",
		Session: "s", SessionExpires: expiry, LockDelay: 30})
	m.save(l, effs)
	require.Equal(t, "grant o", kinds(effs))
	require.Equal(t, "grant x", kinds(m.acquire("x", Exclusive, 2, 6, 0)))
	require.Equal(t, "queue w", kinds(m.acquire("w", Exclusive, 2, 30, 60)))
	m.advance(7 * time.Second)
	return m, expiry
}
