package outbox

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// The relay's statements are planned by their indexes, also in the generic
// plans a connection caches while the outbox holds a few rows (where
// PostgreSQL's own choice is a sequential scan, which the queue's dead rows
// make slower with every pass until the next VACUUM).
func TestRelayPlansByIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	var ids []int64
	var created []time.Time
	require.NoError(t, st.Pool.QueryRow(ctx, `WITH n AS (INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, 't', '\x00' FROM generate_series(1, 300) RETURNING id, created_at)
		SELECT array_agg(id ORDER BY id), array_agg(created_at ORDER BY id) FROM n`).Scan(&ids, &created))
	refs := make([]rowRef, len(ids))
	for i := range ids {
		refs[i] = rowRef{ids[i], created[i]}
	}
	cfg := st.Pool.Config().Copy()
	cfg.MinConns, cfg.MaxConns = 0, 1 // one session: its prepared statements are the ones checked
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	r := &Relay{cfg: Config{Pool: pool, BatchSize: 10}}
	for i := range 8 { // PostgreSQL settles on a generic plan after five custom ones
		_, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64, acked: refs[i*10 : i*10+10], parks: true}})
		require.NoError(t, err)
		_, err = r.deleteRows(ctx, [][]rowRef{refs[100+i*10 : 100+i*10+10]})
		require.NoError(t, err)
	}

	c, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer c.Release()
	rows, err := c.Query(ctx, `SELECT name, generic_plans, statement FROM pg_prepared_statements
		WHERE statement ~ 'FROM outbox' AND statement !~ 'pg_prepared_statements'`)
	require.NoError(t, err)
	type stmt struct {
		name    string
		generic int64
		sql     string
	}
	stmts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stmt, error) {
		var s stmt
		return s, r.Scan(&s.name, &s.generic, &s.sql)
	})
	require.NoError(t, err)
	require.Len(t, stmts, 4, "the DELETE of rows, of marks, the UPDATE of parks, and the SELECT")
	// Read under the relay's settings, as every batch of the relay runs: a
	// cached plan invalidated meanwhile (autovacuum analyzing the outbox of
	// a parallel test's) is planned again under them.
	tx, err := c.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	settings := &pgx.Batch{}
	queueSettings(settings)
	require.NoError(t, tx.SendBatch(ctx, settings).Close())
	for _, s := range stmts {
		require.Positive(t, s.generic, "the cached generic plan is the one checked: %s", s.sql)
		plan := testdb.CachedPlan(t, tx.Conn(), s.name)
		require.NotContains(t, plan, "Seq Scan", "%s\n%s", s.sql, plan)
		if s.sql == deleteRowsSQL {
			require.Contains(t, plan, "Index Cond: (id = ANY ($1))", "%s\n%s", s.sql, plan)
		}
	}
	// A custom plan too, as PostgreSQL makes for a statement's first
	// runs, of as many rows as a pass publishes: the rows looked up by
	// their ids, not the whole index walked.
	rows, err = tx.Query(ctx, "EXPLAIN "+deleteRowsSQL, ids[160:], created[160:])
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	require.Contains(t, plan, "Index Cond: (id = ANY (", plan)
	require.NotContains(t, plan, "Seq Scan", plan)

	var remaining int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&remaining))
	require.Equal(t, 300-160, remaining)
}
