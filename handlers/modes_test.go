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

func shared(c *topics.Command)          { c.Mode = topics.ModeShared }
func limit(n int) func(*topics.Command) { return func(c *topics.Command) { c.Limit = n } }
func ownerOf(ev topics.Event) string    { return ev.LockInfo.OwnerID }

// grants lists "owner mode" of the lock.acquired events, in order.
func grants(evs []topics.Event) []string {
	var out []string
	for _, ev := range find(evs, topics.TypeAcquired) {
		out = append(out, ev.LockInfo.OwnerID+" "+ev.LockInfo.Mode)
	}
	return out
}

// typesAndOwners lists "type owner" of evs, in order.
func typesAndOwners(evs []topics.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type+" "+ev.LockInfo.OwnerID)
	}
	return out
}

// TestJoinSettlesAnExpiredReaderFirst: a reader joining readers settles a
// reader whose lease ran out first (no command acts beside a lease that
// has ended), sent ahead or inline.
func TestJoinSettlesAnExpiredReaderFirst(t *testing.T) {
	base := newHarness(t)
	for _, ahead := range []bool{true, false} {
		h := base.fresh()
		h.one(h.acquire("a", "r1", shared, lease(60)))
		h.one(h.acquire("a", "r2", shared, lease(60)))
		h.endLeases(`owner_id = 'r1'`)
		evs := h.run(ahead, []topics.Command{h.acquire("a", "r3", shared)})
		require.Equal(t, []string{"lock.expired r1", "lock.acquired r3"}, typesAndOwners(evs), "ahead %v", ahead)
		require.Equal(t, "r2 r3", h.scalarText(`SELECT string_agg(owner_id, ' ' ORDER BY owner_id) FROM lock_holders`))
	}
}

// TestReleaseAndExtendSettleAnotherExpiredHolderFirst: a holder's release,
// or extend, settles another holder's lease that ran out first, sent ahead
// or inline.
func TestReleaseAndExtendSettleAnotherExpiredHolderFirst(t *testing.T) {
	base := newHarness(t)
	for _, ahead := range []bool{true, false} {
		h := base.fresh()
		for _, lock := range []string{"a", "b"} {
			h.one(h.acquire(lock, "r1", shared, lease(60)))
			h.one(h.acquire(lock, "r2", shared, lease(60)))
		}
		h.endLeases(`owner_id = 'r2'`)
		evs := h.run(ahead, []topics.Command{h.release("a", "r1")})
		require.Equal(t, []string{"lock.expired r2", "lock.released r1"}, typesAndOwners(evs), "ahead %v", ahead)
		evs = h.run(ahead, []topics.Command{h.extend("b", "r1")})
		require.Equal(t, []string{"lock.expired r2", "lock.extended r1"}, typesAndOwners(evs), "ahead %v", ahead)
		require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_holders`))
	}
}

// TestReadersAndWriter: readers share the lock; a writer waits for the last
// of them, and a reader arriving after the writer waits behind it.
func TestReadersAndWriter(t *testing.T) {
	h := newHarness(t)
	r1, r2 := h.one(h.acquire("a", "r1", shared)), h.one(h.acquire("a", "r2", shared))
	require.Equal(t, topics.TypeAcquired, r1.Type)
	require.Equal(t, topics.TypeAcquired, r2.Type)
	require.Equal(t, topics.ModeShared, r2.LockInfo.Mode)
	require.Less(t, r1.LockInfo.FencingToken, r2.LockInfo.FencingToken, "each reader has its own token")
	require.Equal(t, int64(2), h.scalar(`SELECT holder_count FROM locks WHERE lock_name = 'a'`))

	held := h.one(h.acquire("a", "w"))
	require.Equal(t, topics.CodeLockHeld, held.ErrorCode)
	require.Equal(t, "r2", ownerOf(held), "lock_info shows the newest holder")
	require.Equal(t, 1, h.one(h.acquire("a", "w", wait(60))).QueuePosition)
	require.Equal(t, 2, h.one(h.acquire("a", "r3", shared, wait(60))).QueuePosition, "a later reader waits behind the writer")

	evs := h.apply(h.release("a", "r1"))
	require.Empty(t, grants(evs))
	require.Equal(t, "r1", ownerOf(find(evs, topics.TypeReleased)[0]), "the release is about its holder")
	evs = h.apply(h.release("a", "r2"))
	require.Equal(t, []string{"w exclusive"}, grants(evs))
	evs = h.apply(h.release("a", "w"))
	require.Equal(t, []string{"r3 shared"}, grants(evs))

	status := h.one(h.query("a"))
	require.Equal(t, 1, status.LockInfo.HolderCount)
	require.Len(t, status.LockInfo.Holders, 1)
	require.Equal(t, "r3", status.LockInfo.Holders[0].OwnerID)
	require.Equal(t, topics.ModeShared, status.LockInfo.Holders[0].Mode)
}

// TestReleaseGrantsEveryReaderAtTheHead: one release hands the lock to all
// the consecutive readers at the head of the queue, up to the next writer.
func TestReleaseGrantsEveryReaderAtTheHead(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "w"))
	for _, o := range []string{"r1", "r2", "r3"} {
		h.one(h.acquire("a", o, shared, wait(60)))
	}
	h.one(h.acquire("a", "w2", wait(60)))
	h.one(h.acquire("a", "r4", shared, wait(60)))
	evs := h.apply(h.release("a", "w"))
	require.Equal(t, []string{"r1 shared", "r2 shared", "r3 shared"}, grants(evs))
	require.Equal(t, "r1 r2 r3", h.scalarText(`SELECT string_agg(owner_id, ' ' ORDER BY fencing_token) FROM lock_holders`))
	require.Equal(t, int64(2), h.scalar(`SELECT waiter_count FROM locks`))
	require.Equal(t, []string{"lock.released w", "lock.acquired r1", "lock.acquired r2", "lock.acquired r3"}, h.history("a")[1:])
}

// TestReaderExpiryLetsWriterIn: a reader's lease running out lets the
// waiting writer in only when it was the last reader.
func TestReaderExpiryLetsWriterIn(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "r1", shared, lease(60)))
	h.one(h.acquire("a", "r2", shared, lease(60)))
	h.one(h.acquire("a", "w", wait(60)))
	h.forceHolderEnd("a", "r1")
	_, evs := h.expireDueEvents()
	require.Len(t, evs, 1)
	require.Equal(t, "r1", ownerOf(evs[0]))
	require.Equal(t, topics.StatusExpired, evs[0].LockInfo.Status)
	h.forceHolderEnd("a", "r2")
	_, evs = h.expireDueEvents()
	require.Equal(t, []string{topics.TypeExpired, topics.TypeAcquired}, []string{evs[0].Type, evs[1].Type})
	require.Equal(t, "r2", ownerOf(evs[0]))
	require.Equal(t, []string{"w exclusive"}, grants(evs))
}

// TestSemaphore: a limit of N admits N holders, never N+1, and a freed
// place goes to the first waiter.
func TestSemaphore(t *testing.T) {
	h := newHarness(t)
	for _, o := range []string{"a", "b", "c"} {
		ev := h.one(h.acquire("s", o, limit(3)))
		require.Equal(t, topics.TypeAcquired, ev.Type, o)
		require.Equal(t, 3, ev.LockInfo.Limit)
	}
	held := h.one(h.acquire("s", "d", limit(3)))
	require.Equal(t, topics.CodeLockHeld, held.ErrorCode)
	require.NotNil(t, held.RetryAfterSeconds)
	h.one(h.acquire("s", "d", limit(3), wait(60)))
	h.one(h.acquire("s", "e", limit(3), wait(60)))
	require.Equal(t, int64(3), h.scalar(`SELECT count(*) FROM lock_holders`))
	evs := h.apply(h.release("s", "b"))
	require.Equal(t, []string{"d exclusive"}, grants(evs))
	require.Equal(t, int64(3), h.scalar(`SELECT count(*) FROM lock_holders`))
	require.Equal(t, "a c d", h.scalarText(`SELECT string_agg(owner_id, ' ' ORDER BY fencing_token) FROM lock_holders`))
}

// TestModeAndLimitMismatches: a lock's holders and waiters agree on its
// limit, and a holder cannot change its mode in place.
func TestModeAndLimitMismatches(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("s", "a", limit(3)))
	require.Equal(t, topics.CodeLimitMismatch, h.one(h.acquire("s", "b", limit(2))).ErrorCode)
	require.Equal(t, topics.CodeLimitMismatch, h.one(h.acquire("s", "b")).ErrorCode, "no limit is limit 1")
	require.Equal(t, topics.CodeLimitMismatch, h.one(h.acquire("s", "a")).ErrorCode, "the holder's renewal too")
	h.one(h.release("s", "a"))
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("s", "b")).Type, "nobody holds or waits: a new limit")

	h.one(h.acquire("rw", "r", shared))
	mm := h.one(h.acquire("rw", "r"))
	require.Equal(t, topics.CodeModeMismatch, mm.ErrorCode)
	require.Equal(t, "r", ownerOf(mm))
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("rw", "r", shared)).Type, "a renewal in its own mode")
}

// forceHolderEnd makes owner's lease of lock end now by database time.
func (h *harness) forceHolderEnd(lock, owner string) {
	_, err := h.st.Pool.Exec(h.t.Context(), `UPDATE lock_holders SET expires_at = clock_timestamp() - interval '1 millisecond'
		WHERE namespace = '' AND lock_name = $1 AND owner_id = $2`, lock, owner)
	require.NoError(h.t, err)
}

// tokenDraws counts the statements of a transaction that draw fencing
// tokens on their own (the general path's; the common cases' draw theirs
// inside their statement).
type tokenDraws struct {
	pgx.Tx
	n *int
}

func (d tokenDraws) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	d.count(sql)
	return d.Tx.Query(ctx, sql, args...)
}

func (d tokenDraws) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	d.count(sql)
	return d.Tx.QueryRow(ctx, sql, args...)
}

func (d tokenDraws) count(sql string) {
	if strings.Contains(sql, "fencing_tokens") {
		*d.n++
	}
}

// TestHandOffDrawsItsTokensTogether: a release that hands a read lock to
// a run of readers takes their fencing tokens in one round trip, not one
// per reader, each greater than the one before in queue order.
func TestHandOffDrawsItsTokensTogether(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	writer := h.one(h.acquire("a", "w", lease(600)))
	var readers []topics.Command
	for i := range 200 {
		readers = append(readers, h.acquire("a", fmt.Sprintf("r%03d", i), shared, wait(600)))
	}
	h.apply(readers...)
	var evs []topics.Event
	draws := 0
	require.NoError(t, h.st.InTx(ctx, func(tx pgx.Tx) error {
		b := handlers.NewBatch(tokenDraws{tx, &draws}, h.env)
		var err error
		if evs, err = b.Apply(ctx, h.release("a", "w"), time.Now()); err != nil {
			return err
		}
		return b.Flush(ctx)
	}))
	granted := find(evs, topics.TypeAcquired)
	require.Len(t, granted, len(readers))
	last := writer.LockInfo.FencingToken
	for i, g := range granted {
		require.Equal(t, readers[i].OwnerID, g.LockInfo.OwnerID, "in queue order")
		require.Greater(t, g.LockInfo.FencingToken, last)
		last = g.LockInfo.FencingToken
	}
	require.Equal(t, 1, draws, "one draw of tokens for the hand-off")
}
