package handlers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// Every change of a lock adds one to its revision, which its events carry,
// and publishes the lock's whole state after it to the lock state topic;
// answers that change nothing carry the current revision and publish none;
// cleanup's deletion publishes a tombstone. Both the common cases (sent
// ahead or inline) and the general path.
func TestLockStateRevisions(t *testing.T) {
	h := newHarness(t)
	for _, ahead := range []bool{true, false} {
		h := h.fresh()
		apply := h.applyInline
		if ahead {
			apply = h.apply
		}
		revs := map[string]int64{} // request_id+type -> revision of lock x
		note := func(evs []topics.Event) {
			for _, ev := range evs {
				if li := ev.LockInfo; li != nil && li.LockName == "x" {
					revs[ev.RequestID+" "+ev.Type] = li.Revision
				}
			}
		}
		a, b, c := h.acquire("x", "a", lease(60)), h.acquire("x", "b", wait(60)), h.acquire("x", "c")
		note(apply(a))
		note(apply(b))
		note(apply(c))
		ext := h.extend("x", "a")
		note(apply(ext))
		q := h.query("x")
		note(apply(q))
		rel := h.release("x", "a")
		note(apply(rel))
		h.forceLeaseEnd("x")
		_, evs := h.expireDueEvents()
		note(evs)
		require.Equal(t, map[string]int64{
			a.RequestID + " lock.acquired": 1, b.RequestID + " lock.queued": 2, c.RequestID + " lock.rejected": 2,
			ext.RequestID + " lock.extended": 3, q.RequestID + " lock.status": 3,
			rel.RequestID + " lock.released": 4, b.RequestID + " lock.acquired": 4, " lock.expired": 5,
		}, revs, "ahead %v", ahead)

		// Readers join, one leaves: the state lists the holders of the moment.
		r1, r2 := h.acquire("y", "r1", shared), h.acquire("y", "r2", shared)
		apply(r1)
		apply(r2)
		apply(h.release("y", "r1"))
		h.waitPast(h.timeOf(`SELECT max(updated_at) FROM locks`))
		apply(h.cleanup("x", maxAge(0)))

		type view struct {
			Key      string
			Revision int64
			Status   string
			Holders  []string
			Waiters  int
			Op       string
		}
		var got []view
		for _, s := range h.states() {
			v := view{Key: s.Key}
			if st := s.State; st != nil {
				require.Equal(t, st.HolderCount, len(st.Holders))
				v.Revision, v.Status, v.Waiters, v.Op = st.Revision, st.Status, st.WaiterCount, st.Operation
				for _, x := range st.Holders {
					v.Holders = append(v.Holders, x.OwnerID+"/"+x.Mode)
				}
			}
			got = append(got, v)
		}
		require.Equal(t, []view{
			{"x", 1, "acquired", []string{"a/exclusive"}, 0, "acquire"},
			{"x", 2, "acquired", []string{"a/exclusive"}, 1, "acquire"},
			{"x", 3, "acquired", []string{"a/exclusive"}, 1, "extend"},
			{"x", 4, "acquired", []string{"b/exclusive"}, 0, "release"},
			{"x", 5, "expired", nil, 0, "expire"},
			{"y", 1, "acquired", []string{"r1/shared"}, 0, "acquire"},
			{"y", 2, "acquired", []string{"r1/shared", "r2/shared"}, 0, "acquire"},
			{"y", 3, "acquired", []string{"r2/shared"}, 0, "release"},
			{Key: "x"}, // cleanup's tombstone
		}, got, "ahead %v", ahead)
	}
}

// Locks from before revisions (revision 0) get their first with their
// state, once, under the lock's partition (the batch's for a row of none);
// their next change is revision 2.
func TestPublishFirstStates(t *testing.T) {
	h := newHarness(t)
	h.apply(h.acquire("old", "a", lease(60)), h.acquire("old", "b", wait(60)), h.acquire("gone", "c"))
	h.apply(h.release("gone", "c"))
	_, err := h.st.Pool.Exec(context.Background(), `UPDATE locks SET revision = 0, source_partition = CASE lock_name WHEN 'gone' THEN -1 ELSE 3 END`)
	require.NoError(t, err)
	h.clearOutbox()
	env := h.env
	env.Partition = 7
	n, last := firstStates(h, env, handlers.StateKey{})
	require.Equal(t, 1, n, "one page of one")
	require.Equal(t, handlers.StateKey{Name: "gone"}, last, "the first in key order")
	n, last = firstStates(h, env, last)
	require.Equal(t, 1, n)
	require.Equal(t, handlers.StateKey{Name: "old"}, last)
	n, _ = firstStates(h, env, last)
	require.Equal(t, 0, n, "none after the last")
	n, _ = firstStates(h, env, handlers.StateKey{})
	require.Equal(t, 0, n, "every lock has a revision now")
	got := map[string]string{}
	for _, s := range h.states() {
		st := s.State
		var hs []string
		for _, x := range st.Holders {
			hs = append(hs, x.OwnerID)
		}
		got[s.Key] = fmt.Sprintf("rev=%d %s %v waiters=%d by=%s", st.Revision, st.Status, hs, st.WaiterCount, st.Operation)
	}
	require.Equal(t, map[string]string{
		"old":  "rev=1 acquired [a] waiters=1 by=first_state",
		"gone": "rev=1 released [] waiters=0 by=first_state",
	}, got)
	rows, err := h.st.Pool.Query(context.Background(), `SELECT convert_from(key, 'UTF8') || ' ' || source_partition FROM outbox ORDER BY 1`)
	require.NoError(t, err)
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"gone 7", "old 3"}, parts)
	ev := h.one(h.release("old", "a"))
	require.Equal(t, int64(2), ev.LockInfo.Revision)
}

// firstStates gives a page of one lock without a revision, the first after
// after, its first in a transaction, and returns how many it did and the
// last one's key.
func firstStates(h *harness, env handlers.Env, after handlers.StateKey) (int, handlers.StateKey) {
	h.t.Helper()
	var n int
	var last handlers.StateKey
	require.NoError(h.t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, env)
		var err error
		if n, last, err = b.PublishFirstStates(context.Background(), after, 1); err != nil {
			return err
		}
		return b.Flush(context.Background())
	}))
	return n, last
}

// A page skips a lock whose row another transaction holds and goes on past
// it: here a command's, whose change gives the lock its first revision
// and publishes its state. The walk gives the others theirs, and a start
// after finds none.
func TestPublishFirstStatesSkipsHeldRows(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.apply(h.acquire("a", "o"), h.acquire("b", "o"), h.acquire("c", "o"))
	h.apply(h.release("a", "o"), h.release("b", "o"), h.release("c", "o"))
	_, err := h.st.Pool.Exec(ctx, `UPDATE locks SET revision = 0`)
	require.NoError(t, err)
	h.clearOutbox()

	tx, err := h.st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	cmd := handlers.NewBatch(tx, h.env)
	evs, err := cmd.Apply(ctx, h.acquire("b", "p"), time.Now())
	require.NoError(t, err)
	require.Equal(t, topics.TypeAcquired, evs[0].Type)
	require.Equal(t, int64(1), evs[0].LockInfo.Revision, "a change of a lock at revision 0 gives it its first")

	n, last := firstStates(h, h.env, handlers.StateKey{})
	require.Equal(t, 1, n)
	require.Equal(t, handlers.StateKey{Name: "a"}, last)
	n, last = firstStates(h, h.env, last)
	require.Equal(t, 1, n)
	require.Equal(t, handlers.StateKey{Name: "c"}, last, "b skipped: the command holds it")
	n, _ = firstStates(h, h.env, last)
	require.Zero(t, n)
	require.NoError(t, cmd.Flush(ctx))
	require.NoError(t, tx.Commit(ctx))
	n, _ = firstStates(h, h.env, handlers.StateKey{})
	require.Zero(t, n, "a start after finds none")

	got := map[string]string{}
	for _, s := range h.states() {
		got[s.Key] = fmt.Sprintf("rev=%d %s by=%s", s.State.Revision, s.State.Status, s.State.Operation)
	}
	require.Equal(t, map[string]string{
		"a": "rev=1 released by=first_state",
		"b": "rev=1 acquired by=acquire",
		"c": "rev=1 released by=first_state",
	}, got)
}

// A start after the upgrade from before revisions walks the locks once, in
// key order, each page after the last one's key: the last page of a large
// table reads its own rows only (an index scan from the cursor; a scan for
// revision = 0 would read every page the earlier pages left behind), in
// two round trips (the read; the page's revisions and its held locks'
// holders in one batch), not one per lock.
func TestPublishFirstStatesReadsEachPageOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 50,000 locks")
	}
	t.Parallel()
	ctx := context.Background()
	trips := &roundTrips{}
	st := testdb.NewWith(t, store.Config{LockTimeout: -1, Tracer: trips})
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/test"}
	// Every tenth lock held by one lease, the others released, all as
	// migration 009 left them: revision 0.
	const n, page = 50_000, 100
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO locks (namespace, lock_name, status, source_partition, holder_count, acquisition_count, revision,
			ended_mode, ended_owner_id, ended_fencing_token)
		SELECT '', format('old-%s', lpad(i::text, 6, '0')), CASE WHEN i % 10 = 0 THEN 'acquired' ELSE 'released' END, i % 12,
			(i % 10 = 0)::int, 1, 0, 'exclusive', 'o', i
		FROM generate_series(1, $1) i`, n)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `
		INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
		SELECT '', format('old-%s', lpad(i::text, 6, '0')), 'o', 'exclusive', i, now(), now() + interval '1 hour', 3600, i % 12
		FROM generate_series(10, $1, 10) i`, n)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `ANALYZE locks, lock_holders`)
	require.NoError(t, err)
	var tablePages int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT pg_relation_size('locks') / current_setting('block_size')::int`).Scan(&tablePages))

	onePage := func(db interface {
		Begin(context.Context) (pgx.Tx, error)
	}, after handlers.StateKey, counted bool) (int, handlers.StateKey) {
		var got int
		var last handlers.StateKey
		require.NoError(t, pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, env)
			trips.on.Store(counted)
			var err error
			got, last, err = b.PublishFirstStates(ctx, after, page)
			trips.on.Store(false)
			if err != nil {
				return err
			}
			return b.Flush(ctx)
		}))
		return got, last
	}
	var after handlers.StateKey
	for range n/page - 1 {
		got, last := onePage(st.Pool, after, false)
		require.Equal(t, page, got)
		after = last
	}
	conn := testdb.NewExplained(t, st.Pool)
	got, last := onePage(conn.Pool, after, true)
	require.Equal(t, page, got)
	require.Equal(t, handlers.StateKey{Name: fmt.Sprintf("old-%06d", n)}, last)
	require.Equal(t, int64(2), trips.n.Load(), "the last page's round trips")
	// Its own rows: the index's path to them, their heap pages and a lock
	// of each; the table is more than twice that.
	const bound = 3 * page
	require.Greater(t, tablePages, 2*bound)
	read, plan := conn.Pages(t, "SKIP LOCKED")
	require.NotContains(t, plan, "Seq Scan on locks")
	require.Less(t, read, bound, "the last page's read of a table of %d pages:\n%s", tablePages, plan)
	got, _ = onePage(st.Pool, last, false)
	require.Zero(t, got, "none after the last")

	var left, states int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE revision = 0`).Scan(&left))
	require.Zero(t, left)
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE topic = $1`, env.Names.State).Scan(&states))
	require.Equal(t, n, states)
}

// roundTrips counts a pool's round trips while on: a statement sent alone,
// or a batch (pgx sends a batch's statements in one pipeline).
type roundTrips struct {
	on atomic.Bool
	n  atomic.Int64
}

func (r *roundTrips) count() {
	if r.on.Load() {
		r.n.Add(1)
	}
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.count()
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.count()
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// A lock state lists the first topics.MaxStateHolders holders and counts
// them all, on the common case and the general path alike.
func TestLockStateHoldersBounded(t *testing.T) {
	h := newHarness(t)
	n := topics.MaxStateHolders + 4
	for i := range n {
		h.apply(h.acquire("wide", fmt.Sprintf("r%02d", i), shared))
	}
	h.apply(h.acquire("wide", "writer", wait(60))) // general path: queued behind the readers
	states := h.states()
	require.Len(t, states, n+1)
	for i, s := range states {
		count := min(i+1, n)
		require.Equal(t, count, s.State.HolderCount, "state %d", i)
		require.Len(t, s.State.Holders, min(count, topics.MaxStateHolders), "state %d", i)
		require.Equal(t, "r00", s.State.Holders[0].OwnerID, "grant order")
	}
	require.Equal(t, 1, states[n].State.WaiterCount)
}

// A lock cleaned up and taken again in one transaction publishes its
// tombstone, then its state at revision 1: with only the state, a reader
// keeping the greatest revision seen would drop it and every change after
// it until the revision passed the old one.
func TestStateTombstoneBeforeRecreation(t *testing.T) {
	h := newHarness(t)
	h.apply(h.acquire("z", "a", lease(60)))
	h.apply(h.extend("z", "a"))
	h.apply(h.release("z", "a")) // revision 3
	h.waitPast(h.timeOf(`SELECT max(updated_at) FROM locks`))
	h.clearOutbox()
	h.apply(h.cleanup("z", maxAge(0)), h.acquire("z", "b", lease(60)))
	var got []string
	for _, s := range h.states() {
		if s.State == nil {
			got = append(got, s.Key+" tombstone")
		} else {
			got = append(got, fmt.Sprintf("%s revision %d %s", s.Key, s.State.Revision, s.State.Status))
		}
	}
	require.Equal(t, []string{"z tombstone", "z revision 1 acquired"}, got)
}

// Two locks may share a key (lock "b" in namespace "a" and lock "a/b" in
// the default one): a transaction that changes both publishes each one's
// state, neither standing in for the other's.
func TestStateOfLocksSharingAKey(t *testing.T) {
	h := newHarness(t)
	h.apply(h.acquire("b", "o1", ns("a")), h.acquire("a/b", "o2"))
	var got []string
	for _, s := range h.states() {
		require.NotNil(t, s.State)
		got = append(got, fmt.Sprintf("%s: %q %q %s", s.Key, s.State.Namespace, s.State.LockName, s.State.Holders[0].OwnerID))
	}
	require.Equal(t, []string{`a/b: "a" "b" o1`, `a/b: "" "a/b" o2`}, got)
}

// A lock that one transaction changes for commands of two commands
// partitions (producers not keying by lock key) gets one state record, the
// transaction's last change's, whose holders are those of its revision:
// here a reader's join sent ahead for partition 1, whose holders are read
// at flush, then for partition 2 another reader's release on the general
// path, or a third reader's join sent ahead after it. An earlier record
// left under partition 1 would carry its own revision with the holders
// the later change left.
func TestStateOfLockChangedForTwoPartitions(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, tc := range []struct {
		later func() topics.Command
		want  string
	}{
		{func() topics.Command { return h.release("x", "r1") }, "rev=3 holders=1 [r2] by=release"},
		{func() topics.Command { return h.acquire("x", "r3", shared) }, "rev=3 holders=3 [r1 r2 r3] by=acquire"},
	} {
		h.reset()
		h.apply(h.acquire("x", "r1", shared))
		h.clearOutbox()
		cmds := []topics.Command{h.acquire("x", "r2", shared), tc.later()}
		partitions := []int32{1, 2}
		require.NoError(t, h.applyAcross(ctx, cmds, partitions, len(cmds)))
		var got []string
		for _, s := range h.states() {
			var hs []string
			for _, x := range s.State.Holders {
				hs = append(hs, x.OwnerID)
			}
			got = append(got, fmt.Sprintf("rev=%d holders=%d %v by=%s", s.State.Revision, s.State.HolderCount, hs, s.State.Operation))
		}
		require.Equal(t, []string{tc.want}, got)
		require.Equal(t, []string{"2"}, h.texts(`SELECT source_partition::text FROM outbox WHERE topic = $1`, h.env.Names.State),
			"under the last change's partition")
	}
}
