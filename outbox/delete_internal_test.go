package outbox

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// The relay's DELETE of published rows is planned by the primary key, also
// in the generic plan a connection caches while the outbox holds a few rows
// (where PostgreSQL's own choice is a sequential scan, which the outbox's
// dead rows make slower with every pass until the next VACUUM).
func TestDeletePlannedByPrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	var ids []int64
	require.NoError(t, st.Pool.QueryRow(ctx, `WITH n AS (INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, 't', '\x00' FROM generate_series(1, 300) RETURNING id) SELECT array_agg(id) FROM n`).Scan(&ids))
	c, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer c.Release()
	for i := range 8 { // PostgreSQL settles on a generic plan after five custom ones
		b := &pgx.Batch{}
		queueDelete(b, ids[i*10:i*10+10])
		require.NoError(t, c.SendBatch(ctx, b).Close())
	}
	var name string
	var generic int64
	require.NoError(t, c.QueryRow(ctx, `SELECT name, generic_plans FROM pg_prepared_statements WHERE statement LIKE 'DELETE FROM outbox %'`).Scan(&name, &generic))
	require.Positive(t, generic, "the cached generic plan is the one checked")
	rows, err := c.Query(ctx, `EXPLAIN EXECUTE `+pgx.Identifier{name}.Sanitize()+`('{1}')`, pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, strings.Join(plan, "\n"), "Index Scan on outbox_pkey")
	var remaining int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&remaining))
	require.Equal(t, 300-80, remaining)
}
