package handlers_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
)

// RepublishStates publishes the current state of every lock again, in
// pages in key order, at its revision unchanged, with its holders, each
// under the lock's partition; a row of no partition (negative, seeded by a
// tool) under the batch's, whose relay sends it.
func TestRepublishStates(t *testing.T) {
	h := newHarness(t)
	h.apply(h.acquire("a", "x", lease(60)), h.acquire("a", "y", wait(60)), h.acquire("b", "z"), h.acquire("c", "w"))
	h.apply(h.release("c", "w"))
	_, err := h.st.Pool.Exec(context.Background(), `UPDATE locks SET source_partition = CASE lock_name WHEN 'b' THEN -1 ELSE 3 END`)
	require.NoError(t, err)
	h.clearOutbox()
	env := h.env
	env.Partition = 7
	ns, name := "", ""
	page := func() int {
		var n int
		require.NoError(t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, env)
			var err error
			if n, ns, name, err = b.RepublishStates(context.Background(), ns, name, 2); err != nil {
				return err
			}
			return b.Flush(context.Background())
		}))
		return n
	}
	require.Equal(t, 2, page())
	require.Equal(t, "b", name, "the page's last key")
	require.Equal(t, 1, page())
	require.Equal(t, 0, page())
	var got []string
	for _, s := range h.states() {
		st := s.State
		var hs []string
		for _, x := range st.Holders {
			hs = append(hs, x.OwnerID)
		}
		got = append(got, fmt.Sprintf("%s rev=%d %s %v/%d waiters=%d by=%s", s.Key, st.Revision, st.Status, hs, st.HolderCount, st.WaiterCount, st.Operation))
	}
	require.Equal(t, []string{
		"a rev=2 acquired [x]/1 waiters=1 by=republish",
		"b rev=1 acquired [z]/1 waiters=0 by=republish",
		"c rev=2 released []/0 waiters=0 by=republish",
	}, got)
	rows, err := h.st.Pool.Query(context.Background(), `SELECT convert_from(key, 'UTF8') || ' ' || source_partition FROM outbox ORDER BY id`)
	require.NoError(t, err)
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"a 3", "b 7", "c 3"}, parts, "the lock's partition; the batch's for a row of none")
}
