package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// AnyCommitted tells a committed transaction from a rolled back one, and
// takes an xid this server has not handed out yet (the old primary's,
// after an asynchronous failover) for one that did not commit here, not
// for data PostgreSQL refuses ("transaction ID ... is in the future",
// 22023), which would send the worker looking for a poison record.
func TestAnyCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	var committed, rolledBack int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::int8`).Scan(&committed))
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::int8`).Scan(&rolledBack))
	require.NoError(t, tx.Rollback(ctx))
	future := committed + 1_000_000

	for _, c := range []struct {
		xids []int64
		want bool
	}{
		{[]int64{committed}, true},
		{[]int64{rolledBack}, false},
		{[]int64{future}, false},
		{[]int64{rolledBack, future}, false},
		{[]int64{future, committed}, true},
		{nil, false},
	} {
		got, err := st.AnyCommitted(ctx, c.xids)
		require.NoError(t, err, "%v", c.xids)
		require.Equal(t, c.want, got, "%v", c.xids)
	}
}
