package handlers_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// lockStates lists "name owner status waiters" of every locks row.
func (h *harness) lockStates() []string {
	h.t.Helper()
	var out []string
	rows, err := h.st.Pool.Query(h.t.Context(), `SELECT lock_name || ' ' || coalesce(owner_id, '') || ' ' || status || ' ' || waiter_count FROM `+v1Locks+` ORDER BY namespace, lock_name`)
	require.NoError(h.t, err)
	defer rows.Close()
	for rows.Next() {
		var s string
		require.NoError(h.t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(h.t, rows.Err())
	return out
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestCleanupAll(t *testing.T) {
	h := newHarness(t)
	// held: a live lease with a waiter.
	h.one(h.acquire("held", "hank", lease(30)))
	h.one(h.acquire("held", "gina", wait(30)))
	// ended: a lease past expires_at, nobody waiting.
	ended := h.one(h.acquire("ended", "bob", lease(0.2)))
	// ended-w: a lease past expires_at with a waiter.
	endedW := h.one(h.acquire("ended-w", "carol", lease(60)))
	dave := h.acquire("ended-w", "dave", wait(30))
	h.one(dave)
	// released: an idle released row.
	h.one(h.acquire("released", "erin"))
	h.one(h.release("released", "erin"))
	h.waitPast(ended.LockInfo.ExpiresAt.Time)
	h.endLeases(`owner_id = 'carol'`) // dave queued behind it first
	h.clearOutbox()

	cmd := h.cleanup(topics.CleanupAll, maxAge(0))
	evs := h.apply(cmd)
	cleaned := find(evs, topics.TypeCleaned)
	require.Len(t, cleaned, 1)
	ev := cleaned[0]
	require.True(t, ev.Success)
	require.Equal(t, cmd.RequestID, ev.RequestID)
	require.Equal(t, topics.OpCleanup, ev.Operation)
	require.Equal(t, []string{"ended", "ended-w", "released"}, sorted(ev.CleanedLockNames), "each lock once")
	require.Equal(t, 3, *ev.CleanedCount)

	// Each ended lease: lock.expired to its holder and the lifecycle topic.
	expired := find(evs, topics.TypeExpired)
	require.Len(t, expired, 2)
	owners := map[string]topics.Event{}
	for _, e := range expired {
		owners[e.LockInfo.OwnerID] = e
		require.Equal(t, topics.OpExpire, e.Operation)
		require.Empty(t, e.RequestID)
		require.Equal(t, topics.StatusExpired, e.LockInfo.Status)
	}
	require.Equal(t, ended.LockInfo.FencingToken, owners["bob"].LockInfo.FencingToken)
	require.Equal(t, endedW.LockInfo.FencingToken, owners["carol"].LockInfo.FencingToken)
	routes := h.routes()
	for _, r := range []string{
		"locks.replies.bob lock.expired", "locks.replies.carol lock.expired",
		"locks.replies.dave lock.acquired", "locks.replies.janitor lock.cleaned",
	} {
		require.Contains(t, routes, r)
	}
	require.Len(t, filterRoutes(routes, topics.TypeExpired), 4, "each expiry to its holder and to the lifecycle topic")
	require.Equal(t, []string{"locks.replies.dave lock.acquired", "locks.lock.acquired.v1 lock.acquired"}, filterRoutes(routes, topics.TypeAcquired))
	require.Equal(t, "locks.replies.janitor lock.cleaned", routes[len(routes)-1])

	// The waiter of the ended lease is granted, with a newer token.
	granted := find(evs, topics.TypeAcquired)
	require.Len(t, granted, 1)
	require.Equal(t, dave.RequestID, granted[0].RequestID)
	require.Greater(t, granted[0].LockInfo.FencingToken, endedW.LockInfo.FencingToken)
	require.Equal(t, []string{"lock.acquired carol", "lock.expired carol", "lock.acquired dave"}, h.history("ended-w"))
	require.Equal(t, []string{"lock.acquired bob", "lock.expired bob"}, h.history("ended"))

	// Idle released/expired rows went; held rows and rows with waiters stay.
	require.Equal(t, []string{"ended-w dave acquired 0", "held hank acquired 1"}, h.lockStates())
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_waiters`))

	// A second cleanup has nothing left to do.
	h.clearOutbox()
	again := h.one(h.cleanup(topics.CleanupAll, maxAge(0)))
	require.Zero(t, *again.CleanedCount)
	require.Empty(t, again.CleanedLockNames)
	require.Equal(t, []string{"locks.replies.janitor lock.cleaned"}, h.routes())
}

// TestCleanupAllStaysInItsNamespace: "*" sweeps the command's namespace only.
func TestCleanupAllStaysInItsNamespace(t *testing.T) {
	h := newHarness(t)
	in := func(ns string) func(*topics.Command) { return func(c *topics.Command) { c.Namespace = ns } }
	h.one(h.acquire("job", "alice", in("a")))
	h.one(h.release("job", "alice", in("a")))
	h.one(h.acquire("job", "bob", in("b")))
	h.one(h.release("job", "bob", in("b")))
	h.one(h.acquire("job", "carol"))
	h.one(h.release("job", "carol"))

	ev := h.one(h.cleanup(topics.CleanupAll, maxAge(0), in("a")))
	require.Equal(t, []string{"a/job"}, ev.CleanedLockNames)
	require.Equal(t, 2, int(h.scalar(`SELECT count(*) FROM locks`)), "namespace b and the default namespace keep their rows")
	ev = h.one(h.cleanup(topics.CleanupAll, maxAge(0)))
	require.Equal(t, []string{"job"}, ev.CleanedLockNames)
	require.Equal(t, "b", h.scalarText(`SELECT namespace FROM locks`))
}

func TestCleanupMaxAge(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("r", "alice"))
	h.one(h.release("r", "alice"))

	// Default max_age_seconds (3600): a row released just now is kept.
	ev := h.one(h.cleanup(topics.CleanupAll))
	require.Zero(t, *ev.CleanedCount)
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM locks`))
	ev = h.one(h.cleanup(topics.CleanupAll, maxAge(60)))
	require.Zero(t, *ev.CleanedCount)

	// Age it: a row idle for two hours goes with the default.
	_, err := h.st.Pool.Exec(t.Context(), `UPDATE locks SET updated_at = updated_at - interval '2 hours'`)
	require.NoError(t, err)
	ev = h.one(h.cleanup(topics.CleanupAll))
	require.Equal(t, []string{"r"}, ev.CleanedLockNames)
	require.Zero(t, h.scalar(`SELECT count(*) FROM locks`))
}

func TestCleanupOneLock(t *testing.T) {
	h := newHarness(t)
	x := h.one(h.acquire("x", "xena", lease(0.2)))
	y := h.one(h.acquire("y", "yuri", lease(0.2)))
	z := h.one(h.acquire("x", "zed", ns("other"), lease(0.2)))
	h.waitPast(x.LockInfo.ExpiresAt.Time)
	h.waitPast(y.LockInfo.ExpiresAt.Time)
	h.waitPast(z.LockInfo.ExpiresAt.Time) // acquired last, it may end last
	h.clearOutbox()

	ev := h.one(h.cleanup("x", maxAge(3600)))
	require.Equal(t, []string{"x"}, ev.CleanedLockNames)
	require.Equal(t, 1, *ev.CleanedCount)
	require.Equal(t, []string{"locks.replies.xena lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.janitor lock.cleaned"}, h.routes())
	require.Equal(t, []string{"x xena expired 0", "y yuri acquired 0", "x zed acquired 0"}, h.lockStates(),
		"only lock x of the default namespace was touched")

	// The same name in a namespace.
	ev = h.one(h.cleanup("x", ns("other"), maxAge(0)))
	require.Equal(t, []string{"other/x"}, ev.CleanedLockNames)
	require.Equal(t, 1, *ev.CleanedCount)

	// Then everything else.
	h.clearOutbox()
	ev = h.one(h.cleanup(topics.CleanupAll, maxAge(0)))
	require.Equal(t, []string{"x", "y"}, sorted(ev.CleanedLockNames))
	require.Equal(t, 2, *ev.CleanedCount)
	require.Equal(t, []string{"locks.replies.yuri lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.janitor lock.cleaned"}, h.routes())
	require.Empty(t, h.lockStates())
}

// TestCleanupKeepsTokensMonotonic: a deleted row does not reset the token.
func TestCleanupKeepsTokensMonotonic(t *testing.T) {
	h := newHarness(t)
	var last int64
	for i := 0; i < 3; i++ {
		ev := h.one(h.acquire("m", "mia"))
		require.Equal(t, topics.TypeAcquired, ev.Type)
		require.Greater(t, ev.LockInfo.FencingToken, last)
		require.Greater(t, ev.LockInfo.FencingToken, h.scalar(`SELECT coalesce(max(fencing_token), 0) FROM lock_events WHERE event_id <> $1`, ev.EventID),
			"greater than any token handed out before")
		require.Equal(t, int64(1), ev.LockInfo.AcquisitionCount, "the row is new each time")
		last = ev.LockInfo.FencingToken
		// Another lock takes tokens meanwhile.
		h.one(h.acquire("other", "o"))
		h.one(h.release("other", "o"))
		h.one(h.release("m", "mia"))
		cleaned := h.one(h.cleanup(topics.CleanupAll, maxAge(0)))
		require.Equal(t, []string{"m", "other"}, sorted(cleaned.CleanedLockNames))
		require.Zero(t, h.scalar(`SELECT count(*) FROM locks`))
	}
}

// cleanupStep runs one transaction of the periodic cleanup of h's
// partition (idle rows older than an hour) and returns the locks it touched
// and whether one of its statements reached MaxSweep.
func (h *harness) cleanupStep() (int, bool) {
	h.t.Helper()
	var n int
	var full bool
	require.NoError(h.t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, h.env)
		var err error
		if n, full, _, err = b.CleanupIdle(context.Background(), float64(topics.DefaultMaxAgeSeconds)); err != nil {
			return err
		}
		return b.Flush(context.Background())
	}))
	return n, full
}

// TestCleanupIdleSaysWhenFull: a backlog of ended leases of semaphores,
// five holder rows a lock, fills a step's MaxSweep rows with a fifth as many
// locks: the step says it is full, so that the periodic cleanup runs
// another at once rather than leave the rest for its next interval (the
// locks it touched, fewer than MaxSweep, do not say so). Idle rows deleted
// up to MaxSweep say so too.
func TestCleanupIdleSaysWhenFull(t *testing.T) {
	t.Run("ended leases", func(t *testing.T) {
		h := newHarness(t)
		const locks, each = 2*handlers.MaxSweep/5 + 1, 5
		// Lock i's leases ended together, before lock i+1's: a step's
		// oldest MaxSweep holder rows are all of the oldest locks'.
		_, err := h.st.Pool.Exec(context.Background(), `
			WITH l AS (
				INSERT INTO locks (namespace, lock_name, status, lock_limit, holder_count, acquisition_count, source_partition, updated_at)
				SELECT '', 'sem-' || i, 'acquired', $2::int, $2::int, $2::int, 0, now() - interval '2 hours' FROM generate_series(1, $1::int) i
				RETURNING lock_name, substr(lock_name, 5)::int AS i)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
			SELECT '', lock_name, 'owner-' || o, 'exclusive', nextval('fencing_tokens'), now() - interval '2 hours',
				now() - interval '1 hour' + i * interval '1 millisecond', 60, 0
			FROM l, generate_series(1, $2::int) o`, locks, each)
		require.NoError(t, err)

		// A lock another transaction holds is skipped (it settles it): its
		// rows, the oldest, would be selected first again, so a step that
		// skipped some is not full, and the cleanup does not spin on them.
		other, err := h.st.Pool.Begin(context.Background())
		require.NoError(t, err)
		_, err = other.Exec(context.Background(), `SELECT 1 FROM locks WHERE lock_name = 'sem-1' FOR UPDATE`)
		require.NoError(t, err)
		n, full := h.cleanupStep()
		require.NoError(t, other.Rollback(context.Background()))
		require.False(t, full, "a lock skipped")
		require.Equal(t, handlers.MaxSweep/each-1, n)

		n, full = h.cleanupStep()
		require.True(t, full, "MaxSweep holder rows ended")
		require.Equal(t, handlers.MaxSweep/each, n)
		require.Less(t, n, handlers.MaxSweep, "the locks touched alone would have stopped the cleanup")
		n, full = h.cleanupStep()
		require.False(t, full, "the last of the backlog")
		require.Equal(t, 2, n, "sem-400 and sem-401")
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
		require.Equal(t, int64(locks*each), h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.expired'`))
	})
	t.Run("idle rows", func(t *testing.T) {
		h := newHarness(t)
		_, err := h.st.Pool.Exec(context.Background(), `
			INSERT INTO locks (namespace, lock_name, status, acquisition_count, source_partition, updated_at)
			SELECT '', 'idle-' || i, 'released', 1, 0, now() - interval '2 hours' FROM generate_series(1, $1::int) i`, handlers.MaxSweep+3)
		require.NoError(t, err)
		n, full := h.cleanupStep()
		require.True(t, full)
		require.Equal(t, handlers.MaxSweep, n)
		n, full = h.cleanupStep()
		require.False(t, full)
		require.Equal(t, 3, n)
		require.Zero(t, h.scalar(`SELECT count(*) FROM locks`))
	})
}

// TestCleanupCommandIsBounded: a cleanup command ends the ended leases of
// at most its bound of holder rows and deletes at most its bound of idle
// rows, oldest first, and then answers more: true, so that its
// transaction, which holds its partition, stays bounded however large its
// namespace; sent again, it goes on, and its last answer has no more. The
// bound here is a test's (WithCleanupBound); MaxCleanup otherwise.
func TestCleanupCommandIsBounded(t *testing.T) {
	const bound = 40
	// clean applies a cleanup of every lock of namespace t with the bound,
	// and returns its answer, which it checks says more exactly when want.
	clean := func(t *testing.T, h *harness, more bool, mods ...func(*topics.Command)) topics.Event {
		t.Helper()
		evs, err := h.applyTx(handlers.WithCleanupBound(t.Context(), bound), true,
			[]topics.Command{h.cleanup(topics.CleanupAll, append(mods, ns("t"))...)})
		require.NoError(t, err)
		ev := find(evs, topics.TypeCleaned)[0]
		raw, err := topics.Marshal(ev)
		require.NoError(t, err)
		require.Equal(t, more, strings.Contains(string(raw), `"more":true`), "%s", raw)
		require.Equal(t, more, strings.Contains(string(raw), `"more"`), "more is left out when false: %s", raw)
		return ev
	}
	t.Run("idle rows", func(t *testing.T) {
		h := newHarness(t)
		// idle-1 is the oldest; one of another namespace, older still.
		_, err := h.st.Pool.Exec(t.Context(), `
			INSERT INTO locks (namespace, lock_name, status, acquisition_count, source_partition, updated_at)
			SELECT 't', 'idle-' || i, 'released', 1, i % 12, now() - interval '2 hours' + i * interval '1 ms'
			FROM generate_series(1, $1::int) i
			UNION ALL SELECT 'other', 'idle-0', 'released', 1, 0, now() - interval '3 hours'`, 2*bound+bound/2)
		require.NoError(t, err)
		h.clearOutbox()
		ev := clean(t, h, true, maxAge(0))
		require.Equal(t, bound, *ev.CleanedCount)
		var oldest []string
		for i := 1; i <= bound; i++ {
			oldest = append(oldest, fmt.Sprintf("t/idle-%d", i))
		}
		require.ElementsMatch(t, oldest, ev.CleanedLockNames, "the oldest first")
		require.Len(t, h.states(), bound, "a tombstone for each row deleted, no more")
		require.Equal(t, bound, *clean(t, h, true, maxAge(0)).CleanedCount)
		require.Equal(t, bound/2, *clean(t, h, false, maxAge(0)).CleanedCount)
		require.Equal(t, []string{"other"}, h.texts(`SELECT namespace FROM locks`))
	})
	t.Run("ended leases", func(t *testing.T) {
		h := newHarness(t)
		_, err := h.st.Pool.Exec(t.Context(), `
			WITH l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
				SELECT 't', 'held-' || i, 'acquired', 1, 1, 0 FROM generate_series(1, $1::int) i RETURNING lock_name)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
			SELECT 't', lock_name, 'owner', 'exclusive', nextval('fencing_tokens'), now() - interval '2 hours', now() - interval '1 hour', 60, 0
			FROM l`, bound+bound/2)
		require.NoError(t, err)
		require.Equal(t, bound, *clean(t, h, true).CleanedCount)
		require.Equal(t, int64(bound/2), h.scalar(`SELECT count(*) FROM lock_holders`))
		require.Equal(t, bound/2, *clean(t, h, false).CleanedCount)
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
	})
	// The oldest bound holder rows are of a lock another transaction holds:
	// skipped, they count all the same, and the answer says more though it
	// cleaned nothing, for ended leases of other locks are left. Sent again
	// once that transaction has ended, the cleanup settles that lock whole
	// (bound+1 leases ended for bound rows selected) and goes on (a
	// caller's repeats while it is held would meet it again).
	t.Run("behind a lock another transaction holds", func(t *testing.T) {
		h := newHarness(t)
		_, err := h.st.Pool.Exec(t.Context(), `
			INSERT INTO locks (namespace, lock_name, status, lock_limit, holder_count, acquisition_count, source_partition)
			VALUES ('t', 'sem', 'acquired', $1::int, $1::int, $1::int, 0)`, bound+1)
		require.NoError(t, err)
		_, err = h.st.Pool.Exec(t.Context(), `
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
			SELECT 't', 'sem', 'owner-' || i, 'exclusive', nextval('fencing_tokens'), now() - interval '2 hours', now() - interval '1 hour', 60, 0
			FROM generate_series(1, $1::int) i`, bound+1)
		require.NoError(t, err)
		_, err = h.st.Pool.Exec(t.Context(), `
			WITH l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
				SELECT 't', 'held-' || i, 'acquired', 1, 1, 0 FROM generate_series(1, $1::int) i RETURNING lock_name)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
			SELECT 't', lock_name, 'owner', 'exclusive', nextval('fencing_tokens'), now() - interval '2 hours', now() - interval '30 minutes', 60, 0
			FROM l`, bound/2)
		require.NoError(t, err)
		other, _ := h.blocker()
		_, err = other.Exec(t.Context(), `SELECT FROM locks WHERE lock_name = 'sem' FOR UPDATE`)
		require.NoError(t, err)
		require.Zero(t, *clean(t, h, true).CleanedCount)
		require.Zero(t, *clean(t, h, true).CleanedCount, "sent again while the lock is held, it meets it again")
		_, err = other.Exec(t.Context(), `ROLLBACK`)
		require.NoError(t, err)
		require.Equal(t, []string{"t/sem"}, clean(t, h, true).CleanedLockNames)
		require.Equal(t, int64(bound+1), h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.expired'`),
			"bound holder rows selected, all of sem's leases ended: the lock is settled whole")
		require.Equal(t, bound/2, *clean(t, h, false).CleanedCount)
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`))
	})
	t.Run("MaxCleanup", func(t *testing.T) {
		if testing.Short() {
			t.Skip("cleans 10,000 locks")
		}
		h := newHarness(t)
		_, err := h.st.Pool.Exec(t.Context(), `
			INSERT INTO locks (namespace, lock_name, status, acquisition_count, source_partition, updated_at)
			SELECT 't', 'idle-' || i, 'released', 1, 0, now() - interval '2 hours' FROM generate_series(1, $1::int) i`, handlers.MaxCleanup+1)
		require.NoError(t, err)
		ev := h.one(h.cleanup(topics.CleanupAll, ns("t"), maxAge(0)))
		require.Equal(t, handlers.MaxCleanup, *ev.CleanedCount)
		require.True(t, ev.More)
		require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM locks`))
	})
}
