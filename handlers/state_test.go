package handlers_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
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
	first := func() int {
		var n int
		require.NoError(t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, env)
			var err error
			if n, err = b.PublishFirstStates(context.Background(), 1); err != nil {
				return err
			}
			return b.Flush(context.Background())
		}))
		return n
	}
	require.Equal(t, 1, first(), "one page of one")
	require.Equal(t, 1, first())
	require.Equal(t, 0, first(), "every lock has a revision now")
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
