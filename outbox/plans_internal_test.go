package outbox

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	require.NoError(t, st.Pool.QueryRow(ctx, `WITH n AS (INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, 't', '\x00' FROM generate_series(1, 300) RETURNING id) SELECT array_agg(id) FROM n`).Scan(&ids))
	cfg := st.Pool.Config().Copy()
	cfg.MinConns, cfg.MaxConns = 0, 1 // one session: its prepared statements are the ones checked
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	r := &Relay{cfg: Config{Pool: pool, BatchSize: 10}}
	for i := range 8 { // PostgreSQL settles on a generic plan after five custom ones
		_, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64, acked: ids[i*10 : i*10+10]}})
		require.NoError(t, err)
		_, err = r.deleteRows(ctx, [][]int64{ids[100+i*10 : 100+i*10+10]})
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
	require.Len(t, stmts, 3, "the DELETE of rows, of marks, and the SELECT")
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
	}
	var remaining int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&remaining))
	require.Equal(t, 300-160, remaining)
}

// A read costs what it returns, not the backlog of a topic it leaves out
// (migration 018): beside 200,000 rows of one topic, parked, parked with
// newer rows behind (set aside by the reads that walked past them), backing
// off in memory (set aside too), or whose park has ended, a read of the
// partition reads a few dozen pages. It walked every one of those rows
// before (0.5-0.8 s at a million), and past the relay's query bound the
// reads of every partition merged with it failed. Under the generic plans a
// relay's connection caches, as auto_explain reports them: made while the
// outbox's statistics said it held a few rows, as they mostly do, and made
// after an ANALYZE counted the backlog. That a read sets aside the rows it
// walked past is TestReadSetsAsideWhatItLeavesOut's; until VACUUM, the
// index entries of the rows it set aside are walked, as those of the rows
// deleted once published.
func TestReadCostFollowsRowsReturned(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 200,000 outbox rows")
	}
	t.Parallel()
	const backlog, others = 200_000, 50
	for _, c := range []struct {
		name    string
		until   string // the backlog's parked_until
		newer   bool   // 20,000 newer rows of the backlog's topic wait behind, set aside
		blocked bool   // the backlog's topic backs off in memory, its rows set aside
		want    int    // rows a read returns, the backlog's first
	}{
		{name: "parked", until: "now() + interval '10 minutes'", want: others},
		{name: "parked with newer rows behind", until: "now() + interval '10 minutes'", newer: true, want: others},
		{name: "backing off", until: "NULL", blocked: true, want: others},
		{name: "park ended", until: "now() - interval '1 minute'", want: 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st := testdb.New(t)
			exec := func(sql string, args ...any) {
				t.Helper()
				_, err := st.Pool.Exec(ctx, sql, args...)
				require.NoError(t, err)
			}
			// Statistics of a few rows, kept while the backlog comes.
			exec(`ALTER TABLE outbox SET (autovacuum_enabled = false)`)
			exec(`INSERT INTO outbox (source_partition, topic, value) SELECT 1, 'x', '\x00' FROM generate_series(1, 30)`)
			exec(`ANALYZE outbox`)
			exec(`DELETE FROM outbox`)
			exec(`INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason, set_aside)
				SELECT 0, 'down', '\x00', `+c.until+`, 'TOPIC_AUTHORIZATION_FAILED', $2 FROM generate_series(1, $1)`, backlog, c.blocked)
			if c.newer {
				exec(`INSERT INTO outbox (source_partition, topic, value, set_aside) SELECT 0, 'down', '\x00', true FROM generate_series(1, 20000)`)
			}
			exec(`INSERT INTO outbox (source_partition, topic, value) SELECT 0, 'up', '\x00' FROM generate_series(1, $1)`, others)
			req := selectReq{partition: 0, upTo: math.MaxInt64}
			if c.blocked {
				req.blocked = []string{"down"}
			}
			for _, stats := range []string{"a few rows", "the backlog"} {
				if stats == "the backlog" {
					exec(`ANALYZE outbox`)
				}
				pool, plans := explained(t, st.Pool) // a new connection: new plans
				r := &Relay{cfg: Config{Pool: pool, BatchSize: 500}}
				for i := range 2 {
					res, err := r.selectRows(ctx, []selectReq{req})
					require.NoError(t, err)
					rows := res[0].rows
					require.Len(t, rows, c.want)
					require.Equal(t, c.want == others, rows[0].topic == "up", "the backlog's rows go first once they may")
					require.True(t, slices.IsSortedFunc(rows, func(a, b row) int { return cmp.Compare(a.id, b.id) }))
					plan := plans.last(t, "WITH RECURSIVE")
					require.Less(t, maxBuffers(plan), 100, "read %d, statistics of %s: it walks the backlog\n%s", i, stats, plan)
				}
			}
		})
	}
}

// notices collects the plans auto_explain sends a connection.
type notices struct {
	mu    sync.Mutex
	plans []string
}

// last returns the last plan of a statement containing sql.
func (n *notices) last(t *testing.T, sql string) string {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.plans) - 1; i >= 0; i-- {
		if strings.Contains(n.plans[i], sql) {
			return n.plans[i]
		}
	}
	require.FailNow(t, "auto_explain reported no plan", "of %q", sql)
	return ""
}

// explained is a pool of one connection to pool's database whose every
// statement auto_explain reports (with the buffers it read) under the
// generic plan, as TestPlansOnLargeTables (handlers) does.
func explained(t *testing.T, pool *pgxpool.Pool) (*pgxpool.Pool, *notices) {
	t.Helper()
	n := &notices{}
	cfg := pool.Config().Copy()
	cfg.MinConns, cfg.MaxConns = 0, 1
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, msg *pgconn.Notice) {
		if strings.HasPrefix(msg.Message, "duration:") {
			n.mu.Lock()
			n.plans = append(n.plans, msg.Message)
			n.mu.Unlock()
		}
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		for _, set := range []string{
			`LOAD 'auto_explain'`, // contrib, shipped with PostgreSQL; needs a superuser, as the tests' database user is
			`SET auto_explain.log_min_duration = 0`, `SET auto_explain.log_analyze = on`, `SET auto_explain.log_buffers = on`,
			`SET auto_explain.log_timing = off`, `SET auto_explain.log_level = notice`, `SET client_min_messages = notice`,
			`SET plan_cache_mode = force_generic_plan`,
		} {
			if _, err := c.Exec(ctx, set); err != nil {
				return fmt.Errorf("%s (auto_explain is in PostgreSQL's contrib): %w", set, err)
			}
		}
		return nil
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p, n
}

// maxBuffers is the most pages a node of plan read. Not the top node's
// count alone: a data-modifying CTE the query does not read from (the
// read's UPDATE) runs after it, and counts apart.
func maxBuffers(plan string) int {
	most := 0
	for _, m := range regexp.MustCompile(`Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?`).FindAllStringSubmatch(plan, -1) {
		hit, _ := strconv.Atoi(m[1])
		read, _ := strconv.Atoi(m[2])
		most = max(most, hit+read)
	}
	return most
}
