package testdb

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A statement's pages are counted once whatever its data-modifying CTE's
// rows go to: none (the CTE runs by itself after the top node), the first
// (the top node runs part of it, the rest runs after), all (the top node
// runs all of it, and its count has the CTE's). Each walks the whole
// table, and reads not much more than it does.
func TestPlanPagesCountsEveryCTEOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := New(t)
	_, err := st.Pool.Exec(ctx, `
		CREATE TABLE walked (id int, v int) WITH (fillfactor = 50);
		INSERT INTO walked SELECT g, (g <= 2)::int FROM generate_series(1, 20000) g;
		ANALYZE walked`)
	require.NoError(t, err)
	var pages int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT pg_relation_size('walked') / current_setting('block_size')::int`).Scan(&pages))
	ex := NewExplained(t, st.Pool)
	// The two rows to update stay in the table's first page (room left
	// there): a scan finds the first at once and the rest of the table after.
	const m = `WITH m AS (UPDATE walked SET v = 1 WHERE v = 1 RETURNING id) `
	for _, q := range []string{m + `SELECT 'none', id FROM walked LIMIT 1`, m + `SELECT 'first', id FROM m LIMIT 1`, m + `SELECT 'all', count(*) FROM m`} {
		_, err := ex.Pool.Exec(ctx, q)
		require.NoError(t, err)
		got, plan := ex.Pages(t, q)
		require.GreaterOrEqual(t, got, pages, plan)
		require.Less(t, got, pages+10, plan)
		t.Logf("%d pages of a %d-page table:\n%s", got, pages, plan)
	}
}
