package handlers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// openTx begins a transaction of its own, runs setup in it (SET LOCAL,
// say: a test whose setup needs a privilege checks for it first, as
// needSetDeadlockTimeout does) and returns it with its backend's pid
// (waitBlockedBy): the test applies commands in it (applyIn) and ends it
// when it likes, so that the row locks they took are held meanwhile, as
// by a batch still applying its other commands. It is rolled back at the
// end of the test if still open.
func (h *harness) openTx(setup ...string) (pgx.Tx, int64) {
	h.t.Helper()
	ctx := context.Background()
	tx, err := h.st.Pool.Begin(ctx)
	require.NoError(h.t, err)
	h.t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	for _, s := range setup {
		_, err := tx.Exec(ctx, s)
		require.NoError(h.t, err)
	}
	var pid int64
	require.NoError(h.t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	return tx, pid
}

// needSetDeadlockTimeout skips the test unless its role may SET
// deadlock_timeout (a superuser-only parameter): a superuser, or on
// PostgreSQL 15 and later a role granted SET ON PARAMETER deadlock_timeout.
// What is missing is a privilege of the test role, not the database.
func (h *harness) needSetDeadlockTimeout() {
	h.t.Helper()
	ctx := context.Background()
	var super bool
	var version int
	require.NoError(h.t, h.st.Pool.QueryRow(ctx,
		`SELECT rolsuper, current_setting('server_version_num')::int FROM pg_roles WHERE rolname = current_user`).Scan(&super, &version))
	may := super
	if !may && version >= 150000 {
		require.NoError(h.t, h.st.Pool.QueryRow(ctx, `SELECT has_parameter_privilege('deadlock_timeout', 'SET')`).Scan(&may))
	}
	if !may {
		testdb.SkipMissing(h.t, "the test role may not SET deadlock_timeout: it needs to be a superuser "+
			"or, on PostgreSQL 15 and later, to be granted it (GRANT SET ON PARAMETER deadlock_timeout TO <role>)")
	}
}

// applyIn applies cmds in tx as a batch (and flushes it), leaving tx open.
// It asserts nothing, so any goroutine may call it.
func (h *harness) applyIn(ctx context.Context, tx pgx.Tx, cmds ...topics.Command) ([]topics.Event, error) {
	b := handlers.NewBatch(tx, h.env)
	var out []topics.Event
	for _, c := range cmds {
		evs, err := b.Apply(ctx, c, time.Now())
		if err != nil {
			return out, err
		}
		out = append(out, evs...)
	}
	return out, b.Flush(ctx)
}

// answerTo is c's own answer among evs.
func answerTo(t *testing.T, c topics.Command, evs []topics.Event) topics.Event {
	t.Helper()
	for _, ev := range evs {
		if ev.RequestID == c.RequestID {
			return ev
		}
	}
	t.Fatalf("no answer to %s", c.Operation)
	return topics.Event{}
}

// TestAcquireWaitsForAKeepAliveInFlight: a keep-alive that found the
// session live renews it, even when it commits after the session's old
// expiry. The holder's acquire without a session_id, in that window, reads
// the old expiry with the lock's holders; it waits for the keep-alive
// before it ends the lease as its session's, and decides at the time read
// after that wait. The session kept alive, it renews the lease (same
// fencing token, an expiry of its own), with no lock.expired and no
// lock-delay. The keep-alive committed after its own new expiry, the
// session is past that one too: the lease ends (lock.expired,
// session_expired, its lock-delay from the new expiry), though the
// acquire read its first time before that expiry.
func TestAcquireWaitsForAKeepAliveInFlight(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := "committed before its new expiry"
		if late {
			name = "committed after its new expiry"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			ctx := t.Context()
			sessionTTL := 60.0
			if late {
				sessionTTL = 3 // the acquire reads its first time a second or more before the new expiry
			}
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(sessionTTL))).Type)
			held := h.one(h.acquire("l", "o", inSession("s"), lockDelay(10)))
			require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
			old := h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() + interval '1 second' RETURNING expires_at`)

			keeper, pid := h.openTx()
			evs, err := h.applyIn(ctx, keeper, h.session(topics.OpSessionKeepAlive, "s", "o"))
			require.NoError(t, err)
			require.Len(t, evs, 1)
			require.Equal(t, topics.TypeSessionKeptAlive, evs[0].Type, "found live: %s", evs[0].ErrorMessage)
			var renewed time.Time
			require.NoError(t, keeper.QueryRow(ctx, `SELECT expires_at FROM sessions WHERE id = 's'`).Scan(&renewed))
			h.waitPast(old)
			h.clearOutbox()
			again := h.acquire("l", "o", lease(30))
			answer := h.applyAside(again)
			h.waitBlockedBy(pid)
			if late {
				h.waitPast(renewed)
			}
			require.NoError(t, keeper.Commit(ctx))

			ev := answer()
			if !late {
				require.Equal(t, topics.TypeAcquired, ev.Type, ev.ErrorMessage)
				require.Equal(t, held.LockInfo.FencingToken, ev.LockInfo.FencingToken, "renewed")
				require.Empty(t, ev.LockInfo.SessionID, "a lease of its own")
				require.Equal(t, []string{"locks.replies.o session.kept_alive", "locks.replies.o lock.acquired"}, h.routes(), "no lock.expired")
				require.True(t, h.delayUntil("l").IsZero(), "no lock-delay")
				require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id IS NULL AND expires_at IS NOT NULL`))
				return
			}
			require.Equal(t, topics.TypeRejected, ev.Type)
			require.Equal(t, topics.CodeLockHeld, ev.ErrorCode, "in the lock-delay: %s", ev.ErrorMessage)
			var told []topics.Event // the holder's
			for _, r := range h.outbox() {
				if r.Topic == "locks.replies.o" {
					told = append(told, r.Event)
				}
			}
			lost := find(told, topics.TypeExpired)
			require.Len(t, lost, 1)
			require.Equal(t, topics.ReasonSessionExpired, lost[0].Reason)
			require.Equal(t, held.LockInfo.FencingToken, lost[0].LockInfo.FencingToken)
			require.True(t, renewed.Add(10*time.Second).Equal(h.delayUntil("l")), "lock-delay from the new expiry %v: %v", renewed, h.delayUntil("l"))
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
			require.Equal(t, []string{"lock.acquired o", "lock.expired o"}, h.history("l"))
		})
	}
}

// TestRefusedSessionAcquireDoesNotWaitForAKeepAlive: the holder's lease
// in session s looks past s's expiry while a keep-alive of s is in flight
// (it found s live and holds s's row, its transaction still open). An
// acquire of that lock refused for its own session, s itself past its
// expiry (SESSION_NOT_FOUND) or another owner's (NOT_OWNER), never
// reaches the lease's lapse (rules.Lock.Acquire), so it does not read s
// again: it completes without waiting for the keep-alive (lock_timeout
// would abort it), and the lease is left as it was. An acquire in
// another live session of the holder does reach the lapse: it waits for
// the keep-alive, then finds s kept alive and renews the lease in its own
// session.
func TestRefusedSessionAcquireDoesNotWaitForAKeepAlive(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	for _, s := range []struct{ id, owner string }{{"s", "o"}, {"s2", "o"}, {"p1", "p"}} {
		require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, s.id, s.owner, ttl(60))).Type)
	}
	held := h.one(h.acquire("l", "o", inSession("s")))
	require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
	old := h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() + interval '1 second' WHERE id = 's' RETURNING expires_at`)

	keeper, pid := h.openTx()
	evs, err := h.applyIn(ctx, keeper, h.session(topics.OpSessionKeepAlive, "s", "o"))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, topics.TypeSessionKeptAlive, evs[0].Type, "found live: %s", evs[0].ErrorMessage)
	h.waitPast(old)

	for _, tc := range []struct{ session, code string }{{"s", topics.CodeSessionNotFound}, {"p1", topics.CodeNotOwner}} {
		refused := h.acquire("l", "o", inSession(tc.session))
		tx, _ := h.openTx(`SET LOCAL lock_timeout = '2s'`)
		evs, err := h.applyIn(ctx, tx, refused)
		require.NoError(t, err, "in session %s: no wait for the keep-alive", tc.session)
		require.NoError(t, tx.Commit(ctx))
		ev := answerTo(t, refused, evs)
		require.Equal(t, tc.code, ev.ErrorCode, "in session %s: %s", tc.session, ev.ErrorMessage)
	}
	require.Equal(t, []string{"lock.acquired o"}, h.history("l"), "the lease is left as it was")

	again := h.acquire("l", "o", inSession("s2"))
	answer := h.applyAside(again)
	h.waitBlockedBy(pid)
	require.NoError(t, keeper.Commit(ctx))
	ev := answer()
	require.Equal(t, topics.TypeAcquired, ev.Type, ev.ErrorMessage)
	require.Equal(t, held.LockInfo.FencingToken, ev.LockInfo.FencingToken, "renewed")
	require.Equal(t, "s2", ev.LockInfo.SessionID)
	require.Equal(t, []string{"lock.acquired o"}, h.history("l"), "no lock.expired")
}

// TestSessionAcquireInTheLeasesSessionDoesNotWaitForAKeepAlive: the
// holder's acquire in the session of its own lease, which reads the
// session live, then waits for the lock's row past the session's expiry
// while a keep-alive of it is in flight, is refused SESSION_NOT_FOUND
// (the session expired while the row was waited for) without reading the
// session again: it does not wait for the keep-alive (lock_timeout would
// abort it), and the lease is left as it was.
func TestSessionAcquireInTheLeasesSessionDoesNotWaitForAKeepAlive(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	held := h.one(h.acquire("l", "o", inSession("s")))
	require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
	old := h.timeOf(sessionNear)

	keeper, _ := h.openTx()
	evs, err := h.applyIn(ctx, keeper, h.session(topics.OpSessionKeepAlive, "s", "o"))
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, topics.TypeSessionKeptAlive, evs[0].Type, "found live: %s", evs[0].ErrorMessage)
	blocker, blockerPID := h.blocker()
	_, err = blocker.Exec(ctx, `SELECT FROM locks WHERE lock_name = 'l' FOR UPDATE`)
	require.NoError(t, err)

	// The wait for l's row lasts until just past old (3 s at most).
	again := h.acquire("l", "o", inSession("s"))
	tx, _ := h.openTx(`SET LOCAL lock_timeout = '6s'`)
	type result struct {
		evs []topics.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		evs, err := h.applyIn(ctx, tx, again)
		done <- result{evs, err}
	}()
	h.waitBlockedBy(blockerPID)
	h.waitPast(old)
	_, err = blocker.Exec(ctx, `ROLLBACK`)
	require.NoError(t, err)
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the acquire not applied in 30 s")
	}
	require.NoError(t, r.err, "no wait for the keep-alive")
	require.NoError(t, tx.Commit(ctx))
	ev := answerTo(t, again, r.evs)
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode, ev.ErrorMessage)
	require.NoError(t, keeper.Commit(ctx))
	require.Equal(t, []string{"lock.acquired o"}, h.history("l"), "the lease is left as it was")
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id = 's'`))
}

// TestAcquireDoesNotTakeALeaseFromAnEndInFlight: the holder's acquire
// without a session_id, its session past its expiry, while the session's
// end is in flight (it deleted the session's row and waits for another
// of its locks' rows), never turns the lease into one of its own, which
// the end would then not find: the acquire waits for the session's row,
// the end for the acquire's lock row, and PostgreSQL aborts one of them
// (40P01). The acquire aborted, it is retried and finds the lease ended
// by the session's end; the end aborted, the acquire ends the lease
// itself, as the session's, and the end, retried, finds nothing of it.
// Either way, lock.expired (session_expired) once, and the acquire is a
// new one, granted a new fencing token.
func TestAcquireDoesNotTakeALeaseFromAnEndInFlight(t *testing.T) {
	// victim is the transaction PostgreSQL aborts: the other one's
	// deadlock_timeout is long, so only the victim looks for the deadlock.
	for _, victim := range []string{"acquire", "end"} {
		t.Run("the "+victim+" aborted", func(t *testing.T) {
			h := newHarness(t)
			h.needSetDeadlockTimeout() // SET LOCAL deadlock_timeout, below
			ctx := t.Context()
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
			require.Equal(t, topics.TypeAcquired, h.one(h.acquire("k", "o", inSession("s"))).Type)
			held := h.one(h.acquire("l", "o", inSession("s")))
			require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
			h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`))

			// The end (a close, which finds the session past its expiry)
			// deletes the session's row, then waits for k's row.
			blocker, blockerPID := h.blocker()
			_, err := blocker.Exec(ctx, `SELECT FROM locks WHERE lock_name = 'k' FOR UPDATE`)
			require.NoError(t, err)
			// lock_timeout off, so that the deadlock is found, by the
			// victim's deadlock_timeout (the pool's lock_timeout, 1 s,
			// would refuse either wait first).
			endTimeout, acquireTimeout := `SET LOCAL deadlock_timeout = '1min'; SET LOCAL lock_timeout = 0`, `SET LOCAL deadlock_timeout = '2s'; SET LOCAL lock_timeout = 0`
			if victim == "end" {
				endTimeout, acquireTimeout = acquireTimeout, endTimeout
			}
			ender, enderPID := h.openTx(endTimeout)
			closing := h.session(topics.OpSessionClose, "s", "o")
			type result struct {
				evs []topics.Event
				err error
			}
			ended := make(chan result, 1)
			go func() {
				evs, err := h.applyIn(ctx, ender, closing)
				ended <- result{evs, err}
			}()
			h.waitBlockedBy(blockerPID)

			// The acquire of l, which holds l's row, waits for the
			// session's row; its attempts and their errors are counted.
			again := h.acquire("l", "o", lease(30))
			var errs []error
			acquired := make(chan result, 1)
			go func() {
				var r result
				r.err = h.st.InTx(ctx, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, acquireTimeout); err != nil {
						return err
					}
					evs, err := h.applyIn(ctx, tx, again)
					if err != nil {
						errs = append(errs, err)
					}
					r.evs = evs
					return err
				})
				acquired <- r
			}()
			h.waitBlockedBy(enderPID)
			// The end goes on to l's row: a deadlock.
			_, err = blocker.Exec(ctx, `ROLLBACK`)
			require.NoError(t, err)

			var end, acq result
			var deadlock error
			var wantEnded []string // the locks whose leases the close's end expired
			if victim == "acquire" {
				end = <-ended
				require.NoError(t, end.err)
				require.NoError(t, ender.Commit(ctx))
				acq = <-acquired
				require.NoError(t, acq.err)
				require.Len(t, errs, 1, "aborted once, then retried")
				deadlock = errs[0]
				wantEnded = []string{"k", "l"}
			} else {
				end = <-ended
				require.Error(t, end.err)
				require.NoError(t, ender.Rollback(ctx))
				deadlock = end.err
				acq = <-acquired
				require.NoError(t, acq.err)
				require.Empty(t, errs, "the acquire was not retried")
				// It ended l's lease as its session's.
				lost := find(acq.evs, topics.TypeExpired)
				require.Len(t, lost, 1)
				require.Equal(t, topics.ReasonSessionExpired, lost[0].Reason)
				require.Equal(t, held.LockInfo.FencingToken, lost[0].LockInfo.FencingToken)
				// The close, retried, ends the session and finds k only.
				end.evs = h.apply(closing)
				wantEnded = []string{"k"}
			}
			var pgErr *pgconn.PgError
			require.True(t, errors.As(deadlock, &pgErr), "a PostgreSQL error in the chain: %v", deadlock)
			require.Equal(t, "40P01", pgErr.Code, "a deadlock: %v", deadlock)

			require.Equal(t, topics.CodeSessionNotFound, answerTo(t, closing, end.evs).ErrorCode)
			var expired []string
			for _, ev := range find(end.evs, topics.TypeExpired) {
				require.Equal(t, topics.ReasonSessionExpired, ev.Reason)
				expired = append(expired, ev.LockInfo.LockName)
			}
			require.Equal(t, wantEnded, expired)
			ev := answerTo(t, again, acq.evs)
			require.Equal(t, topics.TypeAcquired, ev.Type, ev.ErrorMessage)
			require.Greater(t, ev.LockInfo.FencingToken, held.LockInfo.FencingToken, "a new lease")
			require.Empty(t, ev.LockInfo.SessionID)
			require.Zero(t, h.scalar(`SELECT count(*) FROM sessions`))
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders WHERE session_id IS NOT NULL`))
			require.Equal(t, []string{"lock.acquired o", "lock.expired o", "lock.acquired o"}, h.history("l"))
		})
	}
}

// TestSessionLeasePastItsExpiryKeptByTheEnd: the holder of a session's
// lease past the session's expiry, before its end: an acquire with that
// session's own session_id is refused SESSION_NOT_FOUND and leaves the
// lease to the session's end, and so does one in another owner's session
// (NOT_OWNER); the holder's release is an ordinary lock.released, with no
// lock-delay, and the session's end then finds nothing of it.
func TestSessionLeasePastItsExpiryKeptByTheEnd(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "o", ttl(60))).Type)
	require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "p1", "p", ttl(60))).Type)
	held := h.one(h.acquire("l", "o", inSession("s"), lockDelay(10)))
	require.Equal(t, topics.TypeAcquired, held.Type, held.ErrorMessage)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`))

	require.Equal(t, topics.CodeSessionNotFound, h.one(h.acquire("l", "o", inSession("s"))).ErrorCode)
	require.Equal(t, topics.CodeNotOwner, h.one(h.acquire("l", "o", inSession("p1"))).ErrorCode)
	require.Equal(t, []string{"lock.acquired o"}, h.history("l"), "the lease is left as it was")

	h.clearOutbox()
	released := h.one(h.release("l", "o"))
	require.Equal(t, topics.TypeReleased, released.Type, released.ErrorMessage)
	require.Empty(t, released.Reason)
	require.Equal(t, held.LockInfo.FencingToken, released.LockInfo.FencingToken)
	require.True(t, h.delayUntil("l").IsZero(), "no lock-delay")
	_, evs := h.expireDueEvents()
	ended := find(evs, topics.TypeSessionExpired)
	require.Len(t, ended, 1)
	require.Zero(t, ended[0].SessionInfo.Leases)
	require.Empty(t, find(evs, topics.TypeExpired))
}
