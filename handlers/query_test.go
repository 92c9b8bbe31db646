package handlers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// locksRows is the locks table as text, to show a query changed nothing.
func (h *harness) locksRows() string {
	return h.scalarText(`SELECT coalesce(json_agg(l ORDER BY namespace, lock_name), '[]')::text FROM locks l`)
}

func TestQuery(t *testing.T) {
	h := newHarness(t)

	t.Run("no row: free", func(t *testing.T) {
		cmd := h.query("nothing")
		ev := h.one(cmd)
		require.Equal(t, topics.TypeStatus, ev.Type)
		require.True(t, ev.Success)
		require.Equal(t, topics.OpQuery, ev.Operation)
		require.Equal(t, topics.StatusFree, ev.LockInfo.Status)
		require.Equal(t, "nothing", ev.LockInfo.LockName)
		require.Empty(t, ev.LockInfo.OwnerID)
		require.Zero(t, ev.LockInfo.FencingToken)
		require.Zero(t, h.scalar(`SELECT count(*) FROM locks`), "a query creates no row")
		require.Equal(t, []string{"locks.replies.q lock.status"}, h.routes())
		require.Equal(t, ev.EventID, h.outcome(cmd.RequestID).EventID, "the outcome is stored like any command's")
	})

	t.Run("held: holder info", func(t *testing.T) {
		acq := h.one(h.acquire("a", "alice", lease(20), ns("t1"), func(c *topics.Command) { c.OwnerMetadata = []byte(`{"pid":7}`) }))
		h.one(h.extend("a", "alice", ns("t1"), extendBy(5)))
		h.one(h.acquire("a", "bob", ns("t1"), wait(30)))
		h.clearOutbox()
		before := h.locksRows()
		q := h.query("a")
		q.Namespace = "t1"
		ev := h.one(q)
		li := ev.LockInfo
		require.Equal(t, topics.TypeStatus, ev.Type)
		require.Equal(t, topics.StatusAcquired, li.Status)
		require.Equal(t, "t1", li.Namespace)
		require.Equal(t, "alice", li.OwnerID)
		require.Equal(t, acq.LockInfo.FencingToken, li.FencingToken)
		require.Equal(t, acq.LockInfo.AcquiredAt, li.AcquiredAt)
		require.Equal(t, acq.LockInfo.ExpiresAt.Add(5e9), li.ExpiresAt.Time)
		require.Equal(t, 20.0, li.LeaseDuration)
		require.Equal(t, int64(1), li.AcquisitionCount)
		require.Equal(t, int64(1), li.ExtensionCount)
		require.JSONEq(t, `{"pid":7}`, string(li.OwnerMetadata))
		require.Equal(t, []string{"locks.replies.q lock.status"}, h.routes())
		require.Equal(t, "t1/a", h.outbox()[0].Key)
		require.Equal(t, before, h.locksRows())

		// The lock of the same name in another namespace is another lock.
		require.Equal(t, topics.StatusFree, h.one(h.query("a")).LockInfo.Status)
	})

	t.Run("released", func(t *testing.T) {
		h.one(h.acquire("r", "alice"))
		h.one(h.release("r", "alice"))
		ev := h.one(h.query("r"))
		require.Equal(t, topics.StatusReleased, ev.LockInfo.Status)
		require.Equal(t, "alice", ev.LockInfo.OwnerID)
	})

	t.Run("lease past expires_at: expired before anything ended it, and nothing written to locks", func(t *testing.T) {
		acq := h.one(h.acquire("e", "erin", lease(60)))
		h.one(h.acquire("e", "fred", wait(30)))
		h.endLeases(`owner_id = 'erin'`) // fred queued behind it first
		h.clearOutbox()
		before := h.locksRows()
		history := h.scalar(`SELECT count(*) FROM lock_events`)

		cmd := h.query("e")
		ev := h.one(cmd)
		require.Equal(t, topics.StatusExpired, ev.LockInfo.Status)
		require.Equal(t, "erin", ev.LockInfo.OwnerID)
		require.Equal(t, acq.LockInfo.FencingToken, ev.LockInfo.FencingToken)

		require.Equal(t, before, h.locksRows(), "query is read-only")
		require.Equal(t, "acquired", h.scalarText(`SELECT status FROM locks WHERE lock_name = 'e'`))
		require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_waiters WHERE lock_name = 'e'`), "the waiter is not granted by a query")
		require.Equal(t, history, h.scalar(`SELECT count(*) FROM lock_events`))
		require.Equal(t, []string{"locks.replies.q lock.status"}, h.routes(), "no lock.expired, no grant: only the reply")
		require.Equal(t, topics.StatusExpired, h.outcome(cmd.RequestID).LockInfo.Status)

		// The next command that locks the row settles it.
		require.Equal(t, 1, h.expireDue())
		require.Equal(t, "fred", h.one(h.query("e")).LockInfo.OwnerID)
	})

	// The lock-delay runs from expires_at however late the expiry is seen,
	// so the lease query shows expired has started it already: an acquire
	// now settles the lease and is refused for that delay.
	t.Run("lease past expires_at: with the lock-delay it starts", func(t *testing.T) {
		acq := h.one(h.acquire("d", "erin", lease(60), lockDelay(30)))
		expired := h.endLeases(`owner_id = 'erin'`)
		before := h.locksRows()

		q := h.one(h.query("d")).LockInfo
		require.Equal(t, topics.StatusExpired, q.Status)
		require.Equal(t, "erin", q.OwnerID)
		require.Equal(t, acq.LockInfo.FencingToken, q.FencingToken)
		require.Equal(t, topics.StatusExpired, q.Holders[0].Status)
		require.NotNil(t, q.DelayUntil, "the lock-delay erin's expiry starts")
		require.Equal(t, expired.Add(30*time.Second), q.DelayUntil.Time)
		require.Equal(t, before, h.locksRows(), "query is read-only")

		held := h.one(h.acquire("d", "bob"))
		require.Equal(t, topics.CodeLockHeld, held.ErrorCode)
		require.Contains(t, held.ErrorMessage, "lock-delay")
		require.Equal(t, q.DelayUntil.Time, h.delayUntil("d"), "what settling the lease left")
		settled := h.one(h.query("d")).LockInfo
		require.Equal(t, topics.StatusExpired, settled.Status)
		require.Equal(t, "erin", settled.OwnerID)
		require.Equal(t, q.DelayUntil, settled.DelayUntil)
	})

	// A session's lease has ended with its session once that is past its
	// expiry, before anything ends the session: query shows it as the
	// session's end will leave it, expired, with its lock-delay from the
	// session's expiry.
	t.Run("a session's lease past its session's expiry: expired, with the lock-delay it starts", func(t *testing.T) {
		require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s", "sam", ttl(60))).Type)
		require.Equal(t, topics.TypeAcquired, h.one(h.acquire("s", "sam", inSession("s"), lockDelay(30))).Type)
		expiry := h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`)
		h.waitPast(expiry)
		before := h.locksRows()

		q := h.one(h.query("s")).LockInfo
		require.Equal(t, topics.StatusExpired, q.Status)
		require.Equal(t, "sam", q.OwnerID)
		require.Equal(t, topics.StatusExpired, q.Holders[0].Status)
		require.Equal(t, expiry, q.Holders[0].ExpiresAt.Time)
		require.NotNil(t, q.DelayUntil, "the lock-delay sam's lease started at its session's expiry")
		require.Equal(t, expiry.Add(30*time.Second), q.DelayUntil.Time)
		require.Equal(t, before, h.locksRows(), "query is read-only")

		_, evs := h.expireDueEvents()
		require.Len(t, find(evs, topics.TypeSessionExpired), 1)
		require.Equal(t, q.DelayUntil.Time, h.delayUntil("s"), "what the session's end left")
	})

	t.Run("without reply_to: no outbox row, outcome still stored", func(t *testing.T) {
		h.clearOutbox()
		cmd := h.query("a")
		cmd.ReplyTo = ""
		ev := h.one(cmd)
		require.Equal(t, topics.TypeStatus, ev.Type)
		require.Empty(t, h.routes())
		require.Equal(t, ev.EventID, h.outcome(cmd.RequestID).EventID)
	})
}

// A status lists as many holders as fit in topics.MaxHoldersBytes, so that
// a semaphore of many holders with large owner_metadata is still answered
// within Kafka's default 1 MiB record; holder_count counts them all.
func TestQueryHoldersFitARecord(t *testing.T) {
	h := newHarness(t)
	meta := []byte(`{"k":"` + strings.Repeat("x", topics.MaxOwnerMetadataBytes-10) + `"}`)
	const n = 300
	cmds := make([]topics.Command, n)
	for i := range cmds {
		cmds[i] = h.acquire("sem", fmt.Sprintf("o%03d", i), limit(n), func(c *topics.Command) { c.OwnerMetadata = meta })
	}
	h.apply(cmds...)
	ev := h.one(h.query("sem"))
	require.Equal(t, n, ev.LockInfo.HolderCount)
	require.Less(t, len(ev.LockInfo.Holders), n)
	require.Greater(t, len(ev.LockInfo.Holders), 100)
	require.Equal(t, "o000", ev.LockInfo.Holders[0].OwnerID, "the first in grant order")
	v, err := ev.Encode()
	require.NoError(t, err)
	require.Less(t, len(v), 1<<20, "fits Kafka's default record size")
}

// A query reads the lock's row and its holders as of one moment: a release
// that commits while the query runs shows either as not yet applied or as
// applied, never as a lock at its held revision with no holder (status
// free, no owner). The release's commit is made to fall while the query
// runs: a third transaction's ACCESS EXCLUSIVE lock on lock_holders,
// queued behind the release's, stops the query before its first read of
// lock_holders (taken before that statement's snapshot) until the release
// has committed.
func TestQueryReadsRowAndHoldersTogether(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	held := h.one(h.acquire("a", "alice", lease(60)))

	// The release, applied and not committed.
	release, err := h.st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer release.Rollback(ctx)
	var releasePID int64
	require.NoError(t, release.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&releasePID))
	b := handlers.NewBatch(release, h.env)
	evs, err := b.Apply(ctx, h.release("a", "alice"), time.Now())
	require.NoError(t, err)
	require.Equal(t, topics.TypeReleased, evs[0].Type)
	require.NoError(t, b.Flush(ctx))
	released := evs[0].LockInfo

	// The table lock, queued behind the release's.
	blocker, blockerPID := h.blocker()
	locked := make(chan error, 1)
	go func() {
		_, err := blocker.Exec(ctx, `LOCK TABLE lock_holders IN ACCESS EXCLUSIVE MODE`)
		locked <- err
	}()
	h.waitBlockedBy(releasePID)

	// The query, stopped by the table lock.
	answer := h.applyAside(h.query("a"))
	h.waitBlockedBy(blockerPID)
	require.NoError(t, release.Commit(ctx))
	require.NoError(t, <-locked)
	_, err = blocker.Exec(ctx, `COMMIT`)
	require.NoError(t, err)

	li := answer().LockInfo
	require.Equal(t, topics.StatusReleased, li.Status, "the release committed before the query read lock_holders: its revision %d", li.Revision)
	require.Equal(t, "alice", li.OwnerID)
	require.Equal(t, held.LockInfo.FencingToken, li.FencingToken)
	require.Equal(t, released.Revision, li.Revision)
	require.Zero(t, li.HolderCount)
}

// A command sent ahead whose statement found its request_id new is applied
// and answered as new, though the prefetch, a statement before it in the
// same round trip, still read the request's outcome that pruning deleted in
// between (a replay at REQUEST_RETENTION's age): before, the old outcome
// was sent again while the statement granted the lock with no event.
func TestAheadAfterItsOutcomeWasPruned(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	acquire := h.acquire("p", "alice", lease(60))
	first := h.one(acquire)
	h.apply(h.release("p", "alice"))

	// The worker's first round trip, on a connection that has its
	// statements prepared already, as a running worker's have: a statement
	// not prepared yet would wait below before any of them ran.
	conn, err := h.st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	ahead := func(c topics.Command) ([]topics.Event, error) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback(ctx)
		b := handlers.NewBatch(tx, h.env)
		pb := &pgx.Batch{}
		b.QueuePrefetch(pb, []string{c.RequestID})
		b.QueueAtOnce(pb, []topics.Command{c}, nil)
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return nil, err
		}
		evs, err := b.Apply(ctx, c, time.Now())
		if err == nil {
			err = b.Flush(ctx)
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		return evs, err
	}
	_, err = ahead(h.acquire("warm", "bob", lease(60)))
	require.NoError(t, err)

	// The statement stops at lock_holders, before its snapshot.
	blocker, blockerPID := h.blocker()
	_, err = blocker.Exec(ctx, `LOCK TABLE lock_holders IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	type result struct {
		evs []topics.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		evs, err := ahead(acquire)
		done <- result{evs, err}
	}()
	h.waitBlockedBy(blockerPID)
	_, err = h.st.Pool.Exec(ctx, `DELETE FROM processed_requests WHERE request_id = $1`, acquire.RequestID)
	require.NoError(t, err)
	_, err = blocker.Exec(ctx, `COMMIT`)
	require.NoError(t, err)

	r := <-done
	require.NoError(t, r.err)
	require.Len(t, r.evs, 1)
	ev := r.evs[0]
	require.Equal(t, topics.TypeAcquired, ev.Type)
	require.NotEqual(t, first.EventID, ev.EventID, "a new grant, not the old one sent again")
	require.Equal(t, h.scalar(`SELECT fencing_token FROM lock_holders WHERE lock_name = 'p'`), ev.LockInfo.FencingToken)
}
