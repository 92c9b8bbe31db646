package handlers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

func (h *harness) session(op, id, owner string, mods ...func(*topics.Command)) topics.Command {
	c := topics.Command{RequestID: h.id(), Operation: op, SessionID: id, OwnerID: owner, ReplyTo: "locks.replies." + owner}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func ttl(s float64) func(*topics.Command)       { return func(c *topics.Command) { c.TTL = s } }
func inSession(id string) func(*topics.Command) { return func(c *topics.Command) { c.SessionID = id } }

func TestSessionOpenKeepAlive(t *testing.T) {
	h := newHarness(t)
	open := h.session(topics.OpSessionOpen, "s1", "alice", ttl(5))
	ev := h.one(open)
	require.Equal(t, topics.TypeSessionOpened, ev.Type, ev.ErrorMessage)
	require.Equal(t, "s1", ev.SessionInfo.SessionID)
	require.Equal(t, "alice", ev.SessionInfo.OwnerID)
	require.Equal(t, 5.0, ev.SessionInfo.TTL)
	require.Equal(t, ev.OccurredAt.Add(5*time.Second), ev.SessionInfo.ExpiresAt.Time)
	require.Equal(t, []string{"locks.replies.alice session.opened"}, h.routes())
	h.resend(open, ev)
	at, ok := h.nextDue(0)
	require.True(t, ok)
	require.Equal(t, ev.SessionInfo.ExpiresAt.Time, at, "the partition's scheduler watches the session")

	ka := h.one(h.session(topics.OpSessionKeepAlive, "s1", "alice"))
	require.Equal(t, topics.TypeSessionKeptAlive, ka.Type, ka.ErrorMessage)
	require.Equal(t, ka.OccurredAt.Add(5*time.Second), ka.SessionInfo.ExpiresAt.Time)
	require.True(t, ka.SessionInfo.ExpiresAt.After(ev.SessionInfo.ExpiresAt.Time))

	for _, tc := range []struct {
		name string
		cmd  topics.Command
		code string
	}{
		{"open in use", h.session(topics.OpSessionOpen, "s1", "alice"), topics.CodeSessionExists},
		{"open in use by another", h.session(topics.OpSessionOpen, "s1", "bob"), topics.CodeSessionExists},
		{"keep-alive by another owner", h.session(topics.OpSessionKeepAlive, "s1", "bob"), topics.CodeNotOwner},
		{"close by another owner", h.session(topics.OpSessionClose, "s1", "bob"), topics.CodeNotOwner},
		{"keep-alive of none", h.session(topics.OpSessionKeepAlive, "nope", "alice"), topics.CodeSessionNotFound},
		{"close of none", h.session(topics.OpSessionClose, "nope", "alice"), topics.CodeSessionNotFound},
		{"acquire in none", h.acquire("a", "alice", inSession("nope")), topics.CodeSessionNotFound},
		{"acquire in another's", h.acquire("a", "bob", inSession("s1")), topics.CodeNotOwner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.clearOutbox()
			ev := h.one(tc.cmd)
			require.Equal(t, topics.TypeRejected, ev.Type)
			require.Equal(t, tc.code, ev.ErrorCode)
			require.NotEmpty(t, ev.ErrorMessage)
			require.Equal(t, []string{tc.cmd.ReplyTo + " lock.rejected"}, h.routes())
			require.Equal(t, tc.code, h.outcome(tc.cmd.RequestID).ErrorCode)
		})
	}
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM sessions`))
	require.Zero(t, h.scalar(`SELECT count(*) FROM locks`), "a refused acquire creates no lock")
}

// A session's leases have no expiry of their own: they outlive their
// lease_duration, refuse extends, show the session, and release as usual.
func TestSessionLease(t *testing.T) {
	h := newHarness(t)
	open := h.one(h.session(topics.OpSessionOpen, "s1", "alice", ttl(60)))
	acq := h.one(h.acquire("a", "alice", inSession("s1"), lease(0.1)))
	require.Equal(t, topics.TypeAcquired, acq.Type, acq.ErrorMessage)
	require.Equal(t, "s1", acq.LockInfo.SessionID)
	require.Equal(t, open.SessionInfo.ExpiresAt, *acq.LockInfo.ExpiresAt, "a session's lease shows the session's expiry")
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id = 's1' AND expires_at IS NULL`))

	h.waitPast(acq.OccurredAt.Add(200 * time.Millisecond))
	require.Zero(t, h.expireDue(), "the lease_duration does not end a session's lease")
	q := h.one(h.query("a"))
	require.Equal(t, topics.StatusAcquired, q.LockInfo.Status)
	require.Equal(t, "s1", q.LockInfo.Holders[0].SessionID)
	require.Equal(t, topics.StatusAcquired, q.LockInfo.Holders[0].Status)

	ext := h.one(h.extend("a", "alice"))
	require.Equal(t, topics.CodeSessionBound, ext.ErrorCode)

	held := h.one(h.acquire("a", "bob"))
	require.Equal(t, topics.CodeLockHeld, held.ErrorCode)
	require.NotNil(t, held.RetryAfterSeconds)
	require.Greater(t, *held.RetryAfterSeconds, 50.0, "until the session's expiry")

	// Acquiring again without the session gives the lease its own expiry.
	again := h.one(h.acquire("a", "alice", lease(30)))
	require.Equal(t, topics.TypeAcquired, again.Type)
	require.Empty(t, again.LockInfo.SessionID)
	require.Equal(t, again.OccurredAt.Add(30*time.Second), again.LockInfo.ExpiresAt.Time)
	again = h.one(h.acquire("a", "alice", inSession("s1")))
	require.Equal(t, "s1", again.LockInfo.SessionID)
	require.Equal(t, acq.LockInfo.FencingToken, again.LockInfo.FencingToken, "a renewal keeps the lease")

	rel := h.one(h.release("a", "alice"))
	require.Equal(t, topics.TypeReleased, rel.Type)
	require.Equal(t, "s1", rel.LockInfo.SessionID)
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
}

// sessionScene opens alice's session s1 (ttl seconds) in which she holds
// a (bob waits for it) and c shared beside carol, and waits for b (held
// by bob); dave waits for b after her.
func sessionScene(h *harness, ttlSeconds float64) topics.Command {
	h.t.Helper()
	require.Equal(h.t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "alice", ttl(ttlSeconds))).Type)
	shared := func(c *topics.Command) { c.Mode = topics.ModeShared }
	for _, c := range []topics.Command{
		h.acquire("a", "alice", inSession("s1")),
		h.acquire("c", "carol", shared),
		h.acquire("c", "alice", inSession("s1"), shared),
		h.acquire("b", "bob"),
	} {
		require.Equal(h.t, topics.TypeAcquired, h.one(c).Type, c)
	}
	waitB := h.acquire("b", "alice", inSession("s1"), wait(60))
	for _, c := range []topics.Command{h.acquire("a", "bob", wait(60)), waitB, h.acquire("b", "dave", wait(60))} {
		require.Equal(h.t, topics.TypeQueued, h.one(c).Type, c)
	}
	return waitB
}

func TestSessionCloseEndsEverything(t *testing.T) {
	h := newHarness(t)
	waitB := sessionScene(h, 60)
	h.clearOutbox()
	closeCmd := h.session(topics.OpSessionClose, "s1", "alice")
	evs := h.apply(closeCmd)
	require.Equal(t, []string{
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released", // a
		"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired", // a to bob
		"locks.replies.alice lock.withdrawn",                                        // the wait for b
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released", // c; carol still holds it
		"locks.replies.alice session.closed",
	}, h.routes(), "locks in key order, one transaction")
	for _, ev := range find(evs, topics.TypeReleased) {
		require.Equal(t, topics.ReasonSessionClosed, ev.Reason)
		require.Equal(t, topics.OpSessionClose, ev.Operation)
		require.Empty(t, ev.RequestID, "not the close's answer")
		require.Equal(t, "alice", ev.LockInfo.OwnerID)
		require.Equal(t, topics.StatusReleased, ev.LockInfo.Status)
	}
	w := find(evs, topics.TypeWithdrawn)[0]
	require.Equal(t, waitB.RequestID, w.RequestID)
	require.Equal(t, topics.ReasonSessionClosed, w.Reason)
	require.Equal(t, w.EventID, h.outcome(waitB.RequestID).EventID, "the wait's final answer")
	closed := find(evs, topics.TypeSessionClosed)[0]
	require.Equal(t, closeCmd.RequestID, closed.RequestID)
	require.Equal(t, 2, closed.SessionInfo.Leases)
	require.Equal(t, 1, closed.SessionInfo.Waits)

	require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id IS NOT NULL`))
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE session_id IS NOT NULL`))
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice", "lock.acquired bob"}, h.history("a"))
	require.Equal(t, "bob", h.one(h.query("a")).LockInfo.OwnerID)
	require.Equal(t, "carol", h.one(h.query("c")).LockInfo.OwnerID)
	h.resend(closeCmd, closed)
	require.Equal(t, topics.CodeSessionNotFound, h.one(h.acquire("d", "alice", inSession("s1"))).ErrorCode)
	require.Equal(t, topics.CodeSessionNotFound, h.one(h.session(topics.OpSessionClose, "s1", "alice")).ErrorCode)
}

// sceneExpiryRoutes are where the end of sessionScene's session as
// expired sends its events, in order.
var sceneExpiryRoutes = []string{
	"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
	"locks.replies.bob lock.acquired", "locks.lock.acquired.v1 lock.acquired",
	"locks.replies.alice lock.withdrawn",
	"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
	"locks.replies.alice session.expired",
}

func TestSessionExpiryEndsEverything(t *testing.T) {
	h := newHarness(t)
	sessionScene(h, 1)
	at, ok := h.nextDue(0)
	require.True(t, ok)
	expires := h.timeOf(`SELECT expires_at FROM sessions WHERE id = 's1'`)
	require.Equal(t, expires, at)

	require.Zero(t, h.expireDue(), "nothing is due before the session's expiry")
	h.waitPast(expires)
	h.clearOutbox()
	n, evs := h.expireDueEvents()
	require.Equal(t, 1, n)
	require.Equal(t, sceneExpiryRoutes, h.routes())
	for _, ev := range find(evs, topics.TypeExpired) {
		require.Equal(t, topics.ReasonSessionExpired, ev.Reason)
		require.Equal(t, topics.OpExpire, ev.Operation)
		require.Equal(t, topics.StatusExpired, ev.LockInfo.Status)
	}
	exp := find(evs, topics.TypeSessionExpired)[0]
	require.Equal(t, "s1", exp.SessionInfo.SessionID)
	require.Equal(t, 2, exp.SessionInfo.Leases)
	require.Equal(t, 1, exp.SessionInfo.Waits)
	require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
	_, ok = h.nextDue(0)
	require.True(t, ok, "bob's lease and the waits are still watched")
	require.Zero(t, h.expireDue())
}

// TestKeepAliveAfterExpiry: a keep-alive after the session's expiry does
// not revive it: it ends it as expired, as the scheduler would (and as a
// close or an open does), and is refused SESSION_NOT_FOUND.
func TestKeepAliveAfterExpiry(t *testing.T) {
	h := newHarness(t)
	sessionScene(h, 60)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's1' RETURNING expires_at`))
	h.clearOutbox()
	keep := h.session(topics.OpSessionKeepAlive, "s1", "alice")
	evs := h.apply(keep)
	require.Equal(t, append(slices.Clone(sceneExpiryRoutes), "locks.replies.alice lock.rejected"), h.routes())
	refused := find(evs, topics.TypeRejected)
	require.Len(t, refused, 1)
	require.Equal(t, keep.RequestID, refused[0].RequestID)
	require.Equal(t, topics.CodeSessionNotFound, refused[0].ErrorCode)
	require.Equal(t, 2, find(evs, topics.TypeSessionExpired)[0].SessionInfo.Leases)
	require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
	require.Zero(t, h.expireDue(), "nothing left for the scheduler")
}

// A close after the session's expiry, before the scheduler saw it, ends it
// as expired and is refused: one sent after the expiry, and one that
// waited for the session's row while the expiry passed (the time it is
// judged by is read once the row is locked).
func TestSessionCloseAfterExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(h *harness, c topics.Command) topics.Event
	}{
		{"sent after it", func(h *harness, c topics.Command) topics.Event {
			h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's1' RETURNING expires_at`))
			return h.one(c)
		}},
		{"waited past it", func(h *harness, c topics.Command) topics.Event {
			return h.waitingPast(sessionNear, `SELECT FROM sessions WHERE id = 's1' FOR SHARE`, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "alice", ttl(60))).Type)
			require.Equal(t, topics.TypeAcquired, h.one(h.acquire("a", "alice", inSession("s1"))).Type)
			h.clearOutbox()
			ev := tc.close(h, h.session(topics.OpSessionClose, "s1", "alice"))
			require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
			require.Equal(t, []string{
				"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
				"locks.replies.alice session.expired", "locks.replies.alice lock.rejected",
			}, h.routes())
			require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
		})
	}
}

// An open of a session_id past its expiry, before the scheduler saw it,
// ends the old session as expired (its lease too) and opens the id again,
// as the contract lets an expired id be opened again; a live one is
// SESSION_EXISTS.
func TestSessionOpenAfterExpiry(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "alice", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("a", "alice", inSession("s1"))).Type)
	require.Equal(t, topics.CodeSessionExists, h.one(h.session(topics.OpSessionOpen, "s1", "bob")).ErrorCode)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's1' RETURNING expires_at`))
	h.clearOutbox()
	ev := h.one(h.session(topics.OpSessionOpen, "s1", "bob"))
	require.Equal(t, topics.TypeSessionOpened, ev.Type, "got %s", ev.ErrorCode)
	require.Equal(t, []string{
		"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
		"locks.replies.alice session.expired", "locks.replies.bob session.opened",
	}, h.routes())
	require.Equal(t, "bob", h.scalarText(`SELECT owner_id FROM sessions WHERE id = 's1'`))
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
}

// TestSessionEndRacesAcquires: a session's close races batches that
// acquire in the session and lock other locks in the opposite order (a
// deadlock, retried, is fair): when all have committed, the session has no
// lease and no wait left, and every acquire in it was either granted and
// then released by the close, withdrawn by it, or refused.
func TestSessionEndRacesAcquires(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("w", "bob")).Type)
	for round := range 6 {
		id := fmt.Sprintf("s%d", round)
		require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, id, "alice", ttl(60))).Type)
		var batches [][]topics.Command
		var mine []topics.Command
		for i := range 6 {
			a, b := fmt.Sprintf("l%d", i%4), fmt.Sprintf("l%d", (i+1)%4)
			if i%2 == 1 {
				a, b = b, a
			}
			acq := h.acquire(a, "alice", inSession(id), wait(60))
			wantW := h.acquire("w", "alice", inSession(id), wait(60))
			batches = append(batches, []topics.Command{h.acquire(b, fmt.Sprintf("carol-%d", i), wait(60)), acq, wantW})
			mine = append(mine, acq, wantW)
		}
		closeCmd := h.session(topics.OpSessionClose, id, "alice")
		batches = append(batches[:3], append([][]topics.Command{{closeCmd}}, batches[3:]...)...)

		errs := make(chan error, len(batches))
		for _, cmds := range batches {
			go func() {
				errs <- h.st.InTx(t.Context(), func(tx pgx.Tx) error {
					b := handlers.NewBatch(tx, h.env)
					for _, c := range cmds {
						if _, err := b.Apply(t.Context(), c, time.Now()); err != nil {
							return err
						}
					}
					return b.Flush(t.Context())
				})
			}()
		}
		for range batches {
			require.NoError(t, <-errs)
		}
		require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id IS NOT NULL OR owner_id = 'alice'`))
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE session_id IS NOT NULL OR owner_id = 'alice'`))
		require.Zero(t, h.scalar(`SELECT count(*) FROM locks l WHERE holder_count <> (SELECT count(*) FROM lock_holders h
			WHERE (h.namespace, h.lock_name) = (l.namespace, l.lock_name)) OR waiter_count <> (SELECT count(*) FROM lock_waiters w
			WHERE (w.namespace, w.lock_name) = (l.namespace, l.lock_name))`), "the counts agree with the rows")
		for _, c := range mine {
			ev := h.outcome(c.RequestID)
			switch ev.Type {
			case topics.TypeAcquired, topics.TypeWithdrawn:
			case topics.TypeRejected:
				require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
			default:
				t.Fatalf("round %d: %s answered %s", round, c.LockName, ev.Type)
			}
		}
	}
}

// TestDueSessionsSharingLocks: sessions that fall due together end
// together, each lock once for all of them: dave's wait on x, where
// carol's session holds, is withdrawn before her lease ends, so x goes to
// erin, not to dave's dying session. Each session.expired counts its own
// leases and waits and follows its locks' events.
func TestDueSessionsSharingLocks(t *testing.T) {
	h := newHarness(t)
	for id, owner := range map[string]string{"s1": "carol", "s2": "dave"} {
		require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, id, owner, ttl(60))).Type)
	}
	for _, c := range []topics.Command{
		h.acquire("x", "carol", inSession("s1")),
		h.acquire("y", "dave", inSession("s2")),
		h.acquire("z", "carol", inSession("s1")),
	} {
		require.Equal(t, topics.TypeAcquired, h.one(c).Type, c)
	}
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("x", "dave", inSession("s2"), wait(60))).Type)
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("x", "erin", wait(60), lease(60))).Type)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = statement_timestamp() RETURNING expires_at`)) // both due, as the setup may take a while

	h.clearOutbox()
	n, evs := h.expireDueEvents()
	require.Equal(t, 2, n)
	infos := map[string]*topics.SessionInfo{}
	for _, ev := range find(evs, topics.TypeSessionExpired) {
		infos[ev.SessionInfo.SessionID] = ev.SessionInfo
	}
	require.Equal(t, 2, infos["s1"].Leases)
	require.Zero(t, infos["s1"].Waits)
	require.Equal(t, 1, infos["s2"].Leases)
	require.Equal(t, 1, infos["s2"].Waits)
	require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
	require.Equal(t, []string{"x erin acquired 0", "y dave expired 0", "z carol expired 0"}, h.lockStates())
	require.Len(t, find(evs, topics.TypeAcquired), 1, "x granted once, to erin")
	for _, owner := range []string{"carol", "dave"} {
		var mine []string
		for _, r := range h.routes() {
			if strings.HasPrefix(r, "locks.replies."+owner+" ") {
				mine = append(mine, strings.TrimPrefix(r, "locks.replies."+owner+" "))
			}
		}
		require.NotEmpty(t, mine)
		require.Equal(t, topics.TypeSessionExpired, mine[len(mine)-1], "%s hears its session's end last: %v", owner, mine)
		if owner == "dave" {
			require.Contains(t, mine, topics.TypeWithdrawn, "dave's wait on x is withdrawn")
		}
	}
}

// TestSessionEndHandsOffOnceItsLeasesEnd: a session's end grants the
// waiters only after its leases have ended. With a semaphore of 2, a plain
// lease that ran out after the session's expiry frees a place, but the
// session's lease, with a lock-delay from the session's expiry, keeps the
// waiter out of it.
func TestSessionEndHandsOffOnceItsLeasesEnd(t *testing.T) {
	h, _, expiry := lapsedSemaphore(t)

	h.clearOutbox()
	_, evs := h.expireDueEvents()
	var got []string
	for _, ev := range evs {
		if ev.LockInfo != nil {
			got = append(got, ev.Type+" "+ev.LockInfo.OwnerID)
		}
	}
	require.Equal(t, []string{"lock.expired x", "lock.expired o"}, got, "w is not granted inside o's lock-delay")
	require.Equal(t, expiry.Add(30*time.Second), h.delayUntil("l"))
	require.Empty(t, h.texts(`SELECT owner_id FROM lock_holders WHERE lock_name = 'l'`))
	require.Equal(t, []string{"w"}, h.texts(`SELECT owner_id FROM lock_waiters WHERE lock_name = 'l'`))
}

// TestAcquireEndingALapsedLeaseHandsOffOnce: an acquire by the holder of
// a lease whose session is past its expiry (not ended yet) ends that lease
// as the session's end would and grants the waiters only after: with a
// semaphore of 2, a plain lease that ran out after the session's expiry
// frees a place, but the lapsed lease, with a lock-delay from the
// session's expiry, keeps the waiter out of it.
func TestAcquireEndingALapsedLeaseHandsOffOnce(t *testing.T) {
	h, sem, expiry := lapsedSemaphore(t)

	h.clearOutbox()
	var got []string
	for _, ev := range h.apply(h.acquire("l", "o", sem, wait(60))) {
		got = append(got, strings.TrimSpace(ev.Type+" "+ev.LockInfo.OwnerID+" "+ev.Reason))
	}
	require.Equal(t, []string{"lock.expired x", "lock.expired o session_expired", "lock.queued o"}, got,
		"w is not granted inside o's lock-delay")
	require.Equal(t, expiry.Add(30*time.Second), h.delayUntil("l"))
	require.Empty(t, h.texts(`SELECT owner_id FROM lock_holders WHERE lock_name = 'l'`))
	require.Equal(t, []string{"w", "o"}, h.texts(`SELECT owner_id FROM lock_waiters WHERE lock_name = 'l' ORDER BY id`))
}

// lapsedSemaphore is semaphore l of 2 held by o, in session s with a
// lock-delay of 30 s, and by x, with w waiting; s is past its expiry
// (returned), not ended, and x's lease has ended since. sem sets the
// limit.
func lapsedSemaphore(t *testing.T) (h *harness, sem func(*topics.Command), expiry time.Time) {
	t.Helper()
	h = newHarness(t)
	sem = func(c *topics.Command) { c.Limit = 2 }
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("l", "o", inSession("s"), lockDelay(30), sem)).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("l", "x", sem, lease(60))).Type)
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("l", "w", sem, wait(60))).Type)
	expiry = h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`)
	h.waitPast(expiry)
	h.endLeases(`owner_id = 'x'`) // after the session's expiry, before its end
	return h, sem, expiry
}

// TestHandOffSkipsAnExpiredSessionsWait: a release hands the lock past a
// wait whose session has expired but not yet been ended (its scheduler is
// another partition's, or has not ticked): the wait is withdrawn with
// reason session_expired, the next waiter granted, and the session's end
// later finds nothing of it there.
func TestHandOffSkipsAnExpiredSessionsWait(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "dave", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("x", "carol", lease(60))).Type)
	daves := h.acquire("x", "dave", inSession("s1"), wait(60))
	require.Equal(t, topics.TypeQueued, h.one(daves).Type)
	require.Equal(t, topics.TypeQueued, h.one(h.acquire("x", "erin", wait(60), lease(60))).Type)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() RETURNING expires_at`))

	h.clearOutbox()
	evs := h.apply(h.release("x", "carol"))
	withdrawn := find(evs, topics.TypeWithdrawn)
	require.Len(t, withdrawn, 1)
	require.Equal(t, daves.RequestID, withdrawn[0].RequestID)
	require.Equal(t, "session_expired", withdrawn[0].Reason)
	require.Contains(t, h.routes(), "locks.replies.dave lock.withdrawn")
	require.Equal(t, "erin", find(evs, topics.TypeAcquired)[0].LockInfo.OwnerID)
	require.Equal(t, []string{"x erin acquired 0"}, h.lockStates())

	n, evs := h.expireDueEvents()
	require.Equal(t, 1, n)
	ended := find(evs, topics.TypeSessionExpired)
	require.Len(t, ended, 1)
	require.Zero(t, ended[0].SessionInfo.Waits, "the hand-off withdrew it")
}

// TestHandOffAndASessionInFlight: a hand-off reaching the wait of a
// session past its expiry whose keep-alive or end is in flight (its row
// locked) never waits for it, since an end would wait for the hand-off's
// lock in turn: it grants the wait, and what is in flight settles it. A
// keep-alive that found the session live renews it, and the lease lives
// on; an end ends the lease.
func TestHandOffAndASessionInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hold locks the session's row in tx, as what is in flight does.
		hold func(h *harness, tx pgx.Tx)
	}{
		{"keep-alive", func(h *harness, tx pgx.Tx) {
			evs, err := handlers.NewBatch(tx, h.env).Apply(h.t.Context(), h.session(topics.OpSessionKeepAlive, "s1", "dave"), time.Now())
			require.NoError(h.t, err)
			require.Equal(h.t, topics.TypeSessionKeptAlive, evs[0].Type)
		}},
		{"end", func(h *harness, tx pgx.Tx) {
			// An end deletes the row first, then locks the session's locks.
			_, err := tx.Exec(h.t.Context(), `DELETE FROM sessions WHERE id = 's1'`)
			require.NoError(h.t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := t.Context()
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "dave", ttl(60))).Type)
			require.Equal(t, topics.TypeAcquired, h.one(h.acquire("x", "carol", lease(60))).Type)
			require.Equal(t, topics.TypeQueued, h.one(h.acquire("x", "dave", inSession("s1"), wait(60))).Type)
			// Its expiry near; a keep-alive's a minute on.
			old := h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() + interval '3 seconds' RETURNING expires_at`)

			held, err := h.st.Pool.Begin(ctx)
			require.NoError(t, err)
			defer held.Rollback(context.WithoutCancel(ctx))
			tc.hold(h, held)
			h.waitPast(old)

			evs := h.apply(h.release("x", "carol")) // does not wait for held
			require.Empty(t, find(evs, topics.TypeWithdrawn))
			granted := find(evs, topics.TypeAcquired)
			require.Len(t, granted, 1)
			require.Equal(t, "dave", granted[0].LockInfo.OwnerID)

			if tc.name == "keep-alive" {
				require.NoError(t, held.Commit(ctx))
				n, _ := h.expireDueEvents()
				require.Zero(t, n, "the session lives on")
				require.Equal(t, []string{"x dave acquired 0"}, h.lockStates())
				return
			}
			require.NoError(t, held.Rollback(ctx))
			// The end, as the scheduler then runs it, ends the lease.
			n, evs := h.expireDueEvents()
			require.Equal(t, 1, n)
			require.Equal(t, 1, find(evs, topics.TypeSessionExpired)[0].SessionInfo.Leases)
			require.Equal(t, []string{"x dave expired 0"}, h.lockStates())
		})
	}
}

// TestKeepAliveAfterAWaitPastExpiry: a keep-alive that waits for the
// session's row (a hand-off's share lock) until the session's expiry has
// passed is refused, as one sent after the expiry is: the expiry is checked
// again once the row is locked.
func TestKeepAliveAfterAWaitPastExpiry(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "dave", ttl(60))).Type)
	ev := h.waitingPast(sessionNear, `SELECT FROM sessions WHERE id = 's1' FOR SHARE`, h.session(topics.OpSessionKeepAlive, "s1", "dave"))
	require.Equal(t, topics.TypeRejected, ev.Type)
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
	require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`), "and ended it")
}

// TestSessionOpenAfterAWaitPastExpiry: an open of a session_id that waits
// for the session's row until its expiry has passed ends the old session
// as expired and opens the id again, not SESSION_EXISTS.
func TestSessionOpenAfterAWaitPastExpiry(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "alice", ttl(60))).Type)
	ev := h.waitingPast(sessionNear, `SELECT FROM sessions WHERE id = 's1' FOR SHARE`, h.session(topics.OpSessionOpen, "s1", "bob"))
	require.Equal(t, topics.TypeSessionOpened, ev.Type, "got %s", ev.ErrorCode)
	require.Equal(t, "bob", h.scalarText(`SELECT owner_id FROM sessions WHERE id = 's1'`))
}

// TestSessionAcquireAfterAWaitPastExpiry: an acquire in a session that
// waits for the lock's row until the session's expiry has passed is
// refused SESSION_NOT_FOUND, not granted a lease of a session past its
// expiry.
func TestSessionAcquireAfterAWaitPastExpiry(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "dave", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("y", "dave", inSession("s1"))).Type) // the lock's row exists
	require.Equal(t, topics.TypeReleased, h.one(h.release("y", "dave")).Type)
	ev := h.waitingPast(sessionNear, `SELECT FROM locks WHERE lock_name = 'y' FOR UPDATE`, h.acquire("y", "dave", inSession("s1")))
	require.Equal(t, topics.TypeRejected, ev.Type)
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
}

// TestSessionAcquireKeptAliveWhileItWaits: an acquire in a session that
// waits for the lock's row while a keep-alive renews the session (which
// the acquire's key-share lock on the session's row lets through), until
// the expiry it read first has passed, is granted: the session is live,
// and its lease shows the new expiry.
func TestSessionAcquireKeptAliveWhileItWaits(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "dave", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("y", "dave", inSession("s1"))).Type) // the lock's row exists
	require.Equal(t, topics.TypeReleased, h.one(h.release("y", "dave")).Type)
	var kept topics.Event
	ev := h.waitingPast(sessionNear, `SELECT FROM locks WHERE lock_name = 'y' FOR UPDATE`, h.acquire("y", "dave", inSession("s1")), func() {
		kept = h.one(h.session(topics.OpSessionKeepAlive, "s1", "dave"))
		require.Equal(t, topics.TypeSessionKeptAlive, kept.Type, kept.ErrorMessage)
	})
	require.Equal(t, topics.TypeAcquired, ev.Type, "%s: %s", ev.ErrorCode, ev.ErrorMessage)
	require.Equal(t, "s1", ev.LockInfo.SessionID)
	require.Equal(t, kept.SessionInfo.ExpiresAt, *ev.LockInfo.ExpiresAt, "the renewed expiry")
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id = 's1'`))
}

// sessionNear brings the sessions' expiry near (waitingPast), with room
// for what comes before it.
const sessionNear = `UPDATE sessions SET expires_at = clock_timestamp() + interval '3 seconds' RETURNING expires_at`

// waitingPast brings an expiry near (nearSQL, returning it), has c wait for
// the row lock that lockSQL takes in another transaction, without changing
// the row, until that expiry has passed, and returns c's answer. What
// meanwhile does runs while c waits, before that expiry.
func (h *harness) waitingPast(nearSQL, lockSQL string, c topics.Command, meanwhile ...func()) topics.Event {
	h.t.Helper()
	ctx := h.t.Context()
	old := h.timeOf(nearSQL)
	holder, err := h.st.Pool.Begin(ctx)
	require.NoError(h.t, err)
	defer holder.Rollback(context.WithoutCancel(ctx))
	var pid int64
	require.NoError(h.t, holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = holder.Exec(ctx, lockSQL)
	require.NoError(h.t, err)

	answer := h.applyAside(c)
	h.waitBlockedBy(pid)
	for _, f := range meanwhile {
		f()
	}
	h.waitPast(old)
	require.NoError(h.t, holder.Commit(ctx))
	return answer()
}

// TestSessionCommandThenLockCommandsInOneBatch: a session command that
// ends a session (a close; a keep-alive or open that finds it past its
// expiry) changes the locks the session holds or waits for, whatever
// their keys. A command of such a lock later in the batch must not be
// sent ahead of it: the batch, common cases sent ahead, gives what the
// commands give one after another in one transaction (events, their
// revisions, their order per topic, the one state record per lock, the
// transaction's last).
func TestSessionCommandThenLockCommandsInOneBatch(t *testing.T) {
	// o holds l shared with a lease of its own, q in session s.
	readers := func(h *harness) {
		require.Equal(h.t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "q", ttl(60))).Type)
		require.Equal(h.t, topics.TypeAcquired, h.one(h.acquire("l", "o", shared, lease(60))).Type)
		require.Equal(h.t, topics.TypeAcquired, h.one(h.acquire("l", "q", shared, inSession("s"))).Type)
	}
	expired := func(h *harness) {
		h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`))
	}
	for _, tc := range []struct {
		name  string
		batch func(h *harness) []topics.Command
	}{
		{"close, then another reader's release", func(h *harness) []topics.Command {
			readers(h)
			return []topics.Command{h.session(topics.OpSessionClose, "s", "q"), h.release("l", "o")}
		}},
		{"keep-alive past the expiry, then another reader's release", func(h *harness) []topics.Command {
			readers(h)
			expired(h)
			return []topics.Command{h.session(topics.OpSessionKeepAlive, "s", "q"), h.release("l", "o")}
		}},
		{"open past the expiry, then another reader's release", func(h *harness) []topics.Command {
			readers(h)
			expired(h)
			return []topics.Command{h.session(topics.OpSessionOpen, "s", "p"), h.release("l", "o")}
		}},
		{"close, then a reader joining, its extend and release, a writer", func(h *harness) []topics.Command {
			readers(h)
			return []topics.Command{h.session(topics.OpSessionClose, "s", "q"), h.acquire("l", "p", shared), h.extend("l", "p"),
				h.release("l", "p"), h.release("l", "o"), h.acquire("l", "w")}
		}},
		{"close, then an extend of a lock the session waits for", func(h *harness) []topics.Command {
			require.Equal(h.t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "q", ttl(60))).Type)
			require.Equal(h.t, topics.TypeAcquired, h.one(h.acquire("l", "o", lease(60))).Type)
			require.Equal(h.t, topics.TypeQueued, h.one(h.acquire("l", "q", inSession("s"), wait(60))).Type)
			return []topics.Command{h.session(topics.OpSessionClose, "s", "q"), h.extend("l", "o")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ahead := newHarness(t)
			inline := ahead.fresh()
			var views [2][]string
			for i, h := range []*harness{ahead, inline} {
				cmds := tc.batch(h)
				h.clearOutbox()
				views[i] = h.batchView(h.run(h == ahead, cmds))
			}
			require.Equal(t, views[1], views[0])
		})
	}
	// The first case in full: the close ends q's lease (revision 3), then
	// o's release (4) the last; the state topic gets revision 4, released.
	h := newHarness(t)
	readers(h)
	h.clearOutbox()
	evs := h.apply(h.session(topics.OpSessionClose, "s", "q"), h.release("l", "o"))
	var revs []string
	for _, ev := range find(evs, topics.TypeReleased) {
		revs = append(revs, fmt.Sprintf("%s %d", ev.LockInfo.OwnerID, ev.LockInfo.Revision))
	}
	require.Equal(t, []string{"q 3", "o 4"}, revs)
	states := h.states()
	require.Len(t, states, 1)
	require.Equal(t, int64(4), states[0].State.Revision)
	require.Equal(t, topics.StatusReleased, states[0].State.Status)
}

// batchView renders a batch's events (with their revisions), where they
// went, in order, and the lock states it published.
func (h *harness) batchView(evs []topics.Event) []string {
	h.t.Helper()
	var out []string
	for _, ev := range evs {
		s := fmt.Sprintf("%s %s req=%s code=%s reason=%s", ev.Type, ev.Operation, ev.RequestID, ev.ErrorCode, ev.Reason)
		if li := ev.LockInfo; li != nil {
			s += fmt.Sprintf(" %s owner=%s status=%s rev=%d", li.LockName, li.OwnerID, li.Status, li.Revision)
		}
		out = append(out, s)
	}
	out = append(out, h.routes()...)
	for _, r := range h.states() {
		s := fmt.Sprintf("state %s rev=%d status=%s", r.Key, r.State.Revision, r.State.Status)
		for _, x := range r.State.Holders {
			s += " " + x.OwnerID + "/" + x.Mode
		}
		out = append(out, s)
	}
	return out
}

// TestAcquireAfterItsSessionsExpiry: the holder's acquire without a
// session, after its session's expiry and before the scheduler ended the
// session, renews nothing: the session's lease ends as the session's end
// would (lock.expired, session_expired, its lock-delay from the session's
// expiry), then the acquire is a new one, refused in that delay or
// granted a new lease; the session's end later finds no lease of it.
func TestAcquireAfterItsSessionsExpiry(t *testing.T) {
	for _, delay := range []float64{10, 0} {
		t.Run(fmt.Sprintf("lock_delay %g", delay), func(t *testing.T) {
			h := newHarness(t)
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
			held := h.one(h.acquire("l", "o", inSession("s"), lockDelay(delay)))
			require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
			expiry := h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`)
			h.waitPast(expiry)
			h.clearOutbox()

			again := h.acquire("l", "o", lease(30))
			evs := h.apply(again)
			lost := find(evs, topics.TypeExpired)
			require.Len(t, lost, 1)
			require.Equal(t, topics.ReasonSessionExpired, lost[0].Reason)
			require.Equal(t, held.LockInfo.FencingToken, lost[0].LockInfo.FencingToken)
			answer := evs[len(evs)-1]
			require.Equal(t, again.RequestID, answer.RequestID)
			if delay > 0 {
				require.Equal(t, topics.CodeLockHeld, answer.ErrorCode)
				require.Equal(t, expiry.Add(10*time.Second), h.delayUntil("l"), "from the session's expiry")
				require.Equal(t, []string{"locks.replies.o lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.o lock.rejected"},
					h.routes())
			} else {
				require.Equal(t, topics.TypeAcquired, answer.Type)
				require.Greater(t, answer.LockInfo.FencingToken, held.LockInfo.FencingToken, "a new lease")
				require.Empty(t, answer.LockInfo.SessionID)
			}

			_, evs = h.expireDueEvents()
			ended := find(evs, topics.TypeSessionExpired)
			require.Len(t, ended, 1)
			require.Zero(t, ended[0].SessionInfo.Leases, "its owner's acquire ended it")
			require.Empty(t, find(evs, topics.TypeExpired))
		})
	}
}

// TestAcquireAfterItsSessionsRowIsGone: the holder's acquire without a
// session_id, its lease's session row deleted (not by that session's end,
// which would have ended the lease with it), finds no session when it
// reads the row again (rereadLapsedSession) and decides at the time read
// then: the lease lapses, as lock.expired (session_expired, same fencing
// token), showing the expiry read before, which with no session row is
// the lease's acquired_at (holderCols). That is no end of the lease
// (rules.Lock.EndLease), so its lock-delay runs from the decision's time;
// the acquire is then a new one, refused LOCK_HELD in that delay.
func TestAcquireAfterItsSessionsRowIsGone(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	held := h.one(h.acquire("l", "o", inSession("s"), lockDelay(60)))
	require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
	acquiredAt := held.LockInfo.AcquiredAt.UTC()
	deleted := h.timeOf(`WITH d AS (DELETE FROM sessions WHERE id = 's' RETURNING 1) SELECT clock_timestamp() FROM d`)
	h.clearOutbox()

	again := h.acquire("l", "o", lease(30))
	evs := h.apply(again)
	lost := find(evs, topics.TypeExpired)
	require.Len(t, lost, 1)
	require.Equal(t, topics.ReasonSessionExpired, lost[0].Reason)
	require.Equal(t, held.LockInfo.FencingToken, lost[0].LockInfo.FencingToken)
	require.True(t, acquiredAt.Equal(lost[0].LockInfo.ExpiresAt.Time), "the expiry read: %v, acquired at %v", lost[0].LockInfo.ExpiresAt, acquiredAt)
	now := lost[0].OccurredAt.UTC()
	require.True(t, now.After(deleted), "decided at %v, after the deletion at %v", now, deleted)
	require.Equal(t, now.Add(60*time.Second), h.delayUntil("l"), "lock-delay from the decision's time")
	ev := answerTo(t, again, evs)
	require.Equal(t, topics.CodeLockHeld, ev.ErrorCode, "in the lock-delay: %s", ev.ErrorMessage)
	require.True(t, now.Equal(ev.OccurredAt.Time))
	require.Equal(t, []string{"locks.replies.o lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.o lock.rejected"},
		h.routes())
	require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
	require.Equal(t, []string{"lock.acquired o", "lock.expired o"}, h.history("l"))
}

// TestRetryAfterPastASessionsExpiry: LOCK_HELD behind a session's lease
// whose session is past its expiry, before the scheduler ended it, says
// to retry now (0), not a negative time.
func TestRetryAfterPastASessionsExpiry(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("l", "o", inSession("s"))).Type)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`))
	held := h.one(h.acquire("l", "p"))
	require.Equal(t, topics.CodeLockHeld, held.ErrorCode)
	require.NotNil(t, held.RetryAfterSeconds)
	require.Zero(t, *held.RetryAfterSeconds)
}

// TestSessionAcquireExpiredWhileCreatingTheLock: an acquire in a session
// whose expiry passes while it creates the lock's row (waiting for another
// transaction's insert of the same lock, rolled back) is refused
// SESSION_NOT_FOUND and leaves no row: `free` exists only inside the
// transaction that creates a row.
func TestSessionAcquireExpiredWhileCreatingTheLock(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	expiry := h.timeOf(sessionNear)
	conn, pid := h.blocker()
	_, err := conn.Exec(ctx, `INSERT INTO locks (namespace, lock_name, status, source_partition) VALUES ('', 'l', 'free', 0)`)
	require.NoError(t, err)
	answer := h.applyAside(h.acquire("l", "o", inSession("s")))
	// Only an acquire that read its session live creates the row, and so
	// waits for that insert.
	h.waitBlockedBy(pid)
	h.waitPast(expiry)
	_, err = conn.Exec(ctx, `ROLLBACK`)
	require.NoError(t, err)
	ev := answer()
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
	require.Equal(t, topics.StatusFree, ev.LockInfo.Status)
	require.Zero(t, ev.LockInfo.Revision)
	require.Zero(t, h.scalar(`SELECT count(*) FROM locks`))
}

// TestSessionRefusedAcquireSettlesTheLock: an acquire refused for its
// session (unknown, past its expiry, another owner's) locks the lock's row
// and settles the lock first, as every command on a lock does (a refused
// release or extend too): a lease that ran out ends (lock.expired) and the
// lock goes to its waiter, a lock-delay that passed is cleared and the
// waiter granted, all in one change with the refusal, which shows the lock
// settled. On a settled lock the refusal changes nothing.
func TestSessionRefusedAcquireSettlesTheLock(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "gone", "o", ttl(60))).Type)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "p1", "p", ttl(60))).Type)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 'gone' RETURNING expires_at`))
	revision := func(lock string) int64 { return h.scalar(`SELECT revision FROM locks WHERE lock_name = $1`, lock) }
	// refused applies o's acquire in session and checks its refusal with
	// code, showing w's grant at the lock's next revision, after the events
	// want; and that the state published is that one change's.
	refused := func(t *testing.T, lock, session, code string, want []string) {
		rev := revision(lock)
		h.clearOutbox()
		evs := h.apply(h.acquire(lock, "o", inSession(session)))
		var got []string
		for _, ev := range evs {
			got = append(got, ev.Type+" "+ev.LockInfo.OwnerID)
		}
		require.Equal(t, want, got)
		ev := evs[len(evs)-1]
		require.Equal(t, code, ev.ErrorCode, ev.ErrorMessage)
		require.Equal(t, "w", ev.LockInfo.OwnerID, "the lock as settled")
		require.Equal(t, topics.StatusAcquired, ev.LockInfo.Status)
		for _, e := range evs {
			require.Equal(t, rev+1, e.LockInfo.Revision, "one change: %s", e.Type)
		}
		states := h.states()
		require.Len(t, states, 1)
		require.Equal(t, rev+1, states[0].State.Revision)
		require.Nil(t, states[0].State.DelayUntil)
		require.Equal(t, []string{"w"}, h.texts(`SELECT owner_id FROM lock_holders WHERE lock_name = $1`, lock))
		require.True(t, h.delayUntil(lock).IsZero())

		// Settled: the next refusal changes nothing.
		h.clearOutbox()
		again := h.one(h.acquire(lock, "o", inSession(session)))
		require.Equal(t, code, again.ErrorCode)
		require.Equal(t, rev+1, again.LockInfo.Revision)
		require.Equal(t, rev+1, revision(lock))
		require.Empty(t, h.states())
	}
	for _, tc := range []struct{ name, session, code string }{
		{"unknown", "nope", topics.CodeSessionNotFound},
		{"past its expiry", "gone", topics.CodeSessionNotFound},
		{"another owner's", "p1", topics.CodeNotOwner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lock := "ended " + tc.name
			require.Equal(t, topics.TypeAcquired, h.one(h.acquire(lock, "x", lease(60))).Type)
			require.Equal(t, topics.TypeQueued, h.one(h.acquire(lock, "w", wait(60))).Type)
			h.endLeases(`lock_name = $1`, lock)
			refused(t, lock, tc.session, tc.code, []string{"lock.expired x", "lock.acquired w", "lock.rejected w"})

			lock = "delayed " + tc.name
			require.Equal(t, topics.TypeAcquired, h.one(h.acquire(lock, "x", lease(60), lockDelay(60))).Type)
			require.Equal(t, topics.TypeQueued, h.one(h.acquire(lock, "w", wait(60))).Type)
			require.Equal(t, 1, h.one(h.revoke(lock, "x", "test")).RevokedCount)
			require.False(t, h.delayUntil(lock).IsZero(), "w waits for the lock-delay")
			h.waitPast(h.timeOf(`UPDATE locks SET delay_until = clock_timestamp() WHERE lock_name = $1 RETURNING delay_until`, lock))
			refused(t, lock, tc.session, tc.code, []string{"lock.acquired w", "lock.rejected w"})
		})
	}
}

// TestRefusedSessionAcquireHoldsNoSessionRow: an acquire refused for its
// session past its expiry does not lock the session's row, so its batch,
// however long it runs, does not keep the scheduler (which skips a locked
// row) from ending the session and freeing its locks. The acquires are
// refused with the same answer as before, whether the row is still there
// (past its expiry) or gone.
func TestRefusedSessionAcquireHoldsNoSessionRow(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("l", "o", inSession("s"))).Type)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`))

	// A batch, still open, with the owner's acquire in its expired session
	// (of another lock: the session's end waits for the rows of its own).
	held, err := h.st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer held.Rollback(context.WithoutCancel(ctx))
	evs, err := handlers.NewBatch(held, h.env).Apply(ctx, h.acquire("m", "o", inSession("s")), time.Now())
	require.NoError(t, err)
	require.Equal(t, topics.CodeSessionNotFound, evs[len(evs)-1].ErrorCode)
	require.Equal(t, `session "s" has expired`, evs[len(evs)-1].ErrorMessage)

	n, evs := h.expireDueEvents()
	require.Equal(t, 1, n, "the scheduler ends the session")
	require.Equal(t, 1, find(evs, topics.TypeSessionExpired)[0].SessionInfo.Leases)
	require.Empty(t, h.texts(`SELECT owner_id FROM lock_holders`))
	require.NoError(t, held.Rollback(ctx))

	ev := h.one(h.acquire("m", "o", inSession("s")))
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
	require.Contains(t, ev.ErrorMessage, "is not open")
}
