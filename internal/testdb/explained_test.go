package testdb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// A role that may not LOAD auto_explain, not a superuser, has the plan
// tests skip, or fail where LOCKWORKER_TEST_REQUIRE_ALL=1, at once and
// saying what is missing, rather than wait forever for a connection that
// never comes (the pool's goroutine, not the test's, ended).
func TestNewExplainedWithoutASuperuser(t *testing.T) {
	ctx := context.Background()
	st := New(t)
	cfg := st.Pool.Config().Copy()
	var super bool
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	if super {
		// The test role is the scenario when it is not a superuser;
		// a superuser's sessions become a role that is not one.
		role := fmt.Sprintf("lwtest_plain_%08x", rand.Uint32())
		_, err := st.Pool.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN NOSUPERUSER`)
		require.NoError(t, err)
		t.Cleanup(func() {
			if _, err := st.Pool.Exec(context.Background(), `DROP ROLE `+role); err != nil {
				t.Errorf("dropping role %s: %v", role, err)
			}
		})
		setup := cfg.AfterConnect
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			if err := setup(ctx, c); err != nil {
				return err
			}
			_, err := c.Exec(ctx, `SET ROLE `+role)
			return err
		}
	}
	plain, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(plain.Close)
	for env, skips := range map[string]bool{"0": true, "1": false} {
		t.Run(RequireAllEnv+"="+env, func(t *testing.T) {
			t.Setenv(RequireAllEnv, env)
			r := &skipRecorder{TB: t}
			done := make(chan struct{})
			go func() { defer close(done); NewExplained(r, plain) }()
			<-done
			const why = "LOAD 'auto_explain' needs a superuser"
			if skips {
				require.Contains(t, r.skipped, why)
				require.Empty(t, r.failed)
			} else {
				require.Empty(t, r.skipped)
				require.Contains(t, r.failed, why)
			}
			require.Contains(t, r.skipped+r.failed, `access to library "auto_explain" is not allowed`)
		})
	}
}

// PlanPages counts what PostgreSQL counted of a statement, the pages of the
// schema's tables and indexes hit or read in its transaction from before
// it to after it (pg_stat_get_xact_blocks_fetched), within a few: the
// plan's have catalog pages (a sort's functions looked up), not a table's
// page added. Whatever a data-modifying CTE's rows go to: none (the CTE runs by itself after the
// top node), some (the top node runs part of it, the rest runs after), all
// (the top node runs all of it); whatever subplans a CTE Scan runs beside
// the CTE (a hashed SubPlan, an InitPlan in its filter or its output); a
// CTE Scan at the top, or at a CTE's root; a name that needs quotes.
func TestPlanPagesCountsWhatTheStatementRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := New(t)
	// The rows to update stay in walked's first page (room left there): a
	// scan finds the first at once and the rest of the table after.
	_, err := st.Pool.Exec(ctx, `
		CREATE TABLE walked (id int, v int) WITH (fillfactor = 50);
		INSERT INTO walked SELECT g, (g <= 2)::int FROM generate_series(1, 20000) g;
		CREATE TABLE small (id int PRIMARY KEY);
		INSERT INTO small SELECT generate_series(1, 100);
		CREATE TABLE big (id int PRIMARY KEY, v int);
		INSERT INTO big SELECT g, g FROM generate_series(1, 40000) g;
		ANALYZE walked, small, big`)
	require.NoError(t, err)
	ex := NewExplained(t, st.Pool)
	const m = `WITH m AS (UPDATE walked SET v = 1 WHERE v = 1 RETURNING id) `
	for _, c := range []struct{ name, q string }{
		{"unread", m + `SELECT id FROM walked LIMIT 1`},
		{"first row", m + `SELECT id FROM m LIMIT 1`},
		{"all rows", m + `SELECT count(*) FROM m`},
		{"scan at the top", m + `SELECT * FROM m`},
		{"InitPlan in the filter", m + `SELECT id FROM m WHERE id < (SELECT count(*) FROM big) LIMIT 1`},
		{"InitPlan in the output", m + `SELECT id + (SELECT count(*) FROM big) FROM m LIMIT 1`},
		{"InitPlan under the scan at the top", m + `SELECT id FROM m WHERE id < (SELECT count(*) FROM big)`},
		{"scan at a CTE's root", m + `, c AS MATERIALIZED (SELECT * FROM m) SELECT count(*) FROM c`},
		{"first row through a CTE", m + `, c AS MATERIALIZED (SELECT * FROM m) SELECT * FROM c LIMIT 1`},
		{"CTE scanned by an unread one", m + `, n AS (UPDATE big SET v = v WHERE id IN (SELECT id FROM m) RETURNING id) SELECT 1`},
		{"InitPlan of the scanning CTE in the filter, all rows",
			m + `, n AS (UPDATE big SET v = v WHERE id IN (SELECT id FROM m WHERE id < (SELECT count(*) FROM small)) RETURNING id) SELECT 1`},
		{"quoted name", `WITH "my cte" AS (UPDATE walked SET v = 1 WHERE v = 1 RETURNING id) SELECT id FROM "my cte" LIMIT 1`},
		{"hashed SubPlan under a read-only CTE's scan",
			`WITH c AS MATERIALIZED (SELECT id FROM small) SELECT count(*) FROM c WHERE id = 0 OR EXISTS (SELECT FROM big WHERE big.v = c.id + 100000)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx, err := ex.Pool.Begin(ctx)
			require.NoError(t, err)
			const fetched = `SELECT sum(pg_stat_get_xact_blocks_fetched(oid))::int FROM pg_class
				WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())`
			var before, after int
			require.NoError(t, tx.QueryRow(ctx, fetched).Scan(&before))
			_, err = tx.Exec(ctx, c.q)
			require.NoError(t, err)
			require.NoError(t, tx.QueryRow(ctx, fetched).Scan(&after))
			require.NoError(t, tx.Commit(ctx))
			got, plan := ex.Pages(t, c.q)
			t.Logf("%d pages, %d read:\n%s", got, after-before, plan)
			require.InDelta(t, after-before, got, 10, plan)
		})
	}
}

// An InitPlan that may have run inside the scan of a data-modifying CTE
// the top node read part of, or beside it, fails the count: by the pages,
// the CTE read 1 or 178 pages after the top node. (The plan of
// "InitPlan in the filter", a join added.)
func TestPlanPagesFailsWhereAnInitPlanRanIsUnknown(t *testing.T) {
	t.Parallel()
	const plan = `duration: 2.024 ms  plan:
Query Text: WITH m AS (UPDATE walked SET v = 1 WHERE v = 1 RETURNING id)
	SELECT m.id FROM m, big b WHERE b.v = m.id + (SELECT count(*) FROM big) LIMIT 1
Limit  (cost=1104.01..1104.06 rows=1 width=4) (actual rows=1 loops=1)
  Buffers: shared hit=358
  CTE m
    ->  Update on walked  (cost=0.00..427.00 rows=2 width=10) (actual rows=2 loops=1)
          Buffers: shared hit=182
          ->  Seq Scan on walked  (cost=0.00..427.00 rows=2 width=10) (actual rows=2 loops=1)
                Filter: (v = 1)
                Rows Removed by Filter: 19998
                Buffers: shared hit=177
  InitPlan 2 (returns $2)
    ->  Aggregate  (cost=677.00..677.01 rows=1 width=8) (actual rows=1 loops=1)
          Buffers: shared hit=177
          ->  Seq Scan on big  (cost=0.00..577.00 rows=40000 width=0) (actual rows=40000 loops=1)
                Buffers: shared hit=177
  ->  Nested Loop  (cost=0.00..1400.00 rows=1 width=4) (actual rows=1 loops=1)
        Buffers: shared hit=358
        ->  CTE Scan on m  (cost=0.00..0.04 rows=2 width=4) (actual rows=1 loops=1)
              Buffers: shared hit=181
        ->  Seq Scan on big b  (cost=0.00..677.00 rows=1 width=4) (actual rows=1 loops=1)
              Filter: (v = (m.id + $2))
              Buffers: shared hit=177`
	_, err := PlanPages(plan)
	require.ErrorContains(t, err, "InitPlan 2 (returns $2)")
	// With the join's inner side reading less than the InitPlan, the
	// InitPlan ran in the scan: 4 pages of the CTE before the top node was
	// done, 178 after.
	pages, err := PlanPages(strings.NewReplacer("hit=358", "hit=190", "Filter: (v = (m.id + $2))\n              Buffers: shared hit=177",
		"Filter: (v = (m.id + $2))\n              Buffers: shared hit=9").Replace(plan))
	require.NoError(t, err)
	require.Equal(t, 190+178, pages)
}
