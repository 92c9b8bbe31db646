package outbox_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
)

// Parked, which every /health probe runs within its 2 s check, reads a
// bounded number of pages whatever the backlog: a topic that cannot be
// written parks every row it has (200,000 here), and rows whose park ended
// wait in the index too. A count of them all reads every entry, more pages
// with every row. auto_explain hands the plan to the test as a notice,
// with the buffers it read, under the generic plan the pool's sessions
// use.
func TestParkedReadIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 250,000 outbox rows")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
			SELECT 0, 'lock.acquired', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED' FROM generate_series(1, 200000);
		INSERT INTO outbox (source_partition, topic, value, parked_until)
			SELECT 1, 'locks.replies.gone', '\x00', now() - interval '1 minute' FROM generate_series(1, 50000);
		INSERT INTO outbox (source_partition, topic, value, parked_until) VALUES
			(2, 'locks.commands.dlq', '\x00', 'infinity'), (3, 'locks.replies.x', '\x00', NULL);
		ANALYZE outbox`)
	require.NoError(t, err)

	cfg := st.Pool.Config().Copy()
	cfg.MinConns, cfg.MaxConns = 0, 1
	var mu sync.Mutex
	var plans []string
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if strings.HasPrefix(n.Message, "duration:") {
			mu.Lock()
			plans = append(plans, n.Message)
			mu.Unlock()
		}
	}
	setup := cfg.AfterConnect // the pool's session settings: its generic plans
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if setup != nil {
			if err := setup(ctx, c); err != nil {
				return err
			}
		}
		// auto_explain is contrib, shipped with PostgreSQL; LOAD needs a
		// superuser, as the tests' database user is.
		_, err := c.Exec(ctx, `LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
			SET auto_explain.log_buffers = on; SET auto_explain.log_timing = off; SET auto_explain.log_level = notice;
			SET client_min_messages = notice`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects at the first query
	require.NoError(t, err)
	defer pool.Close()

	n, err := outbox.Parked(ctx, pool)
	require.NoError(t, err, "(auto_explain is in PostgreSQL's contrib: install it, or point TEST_DATABASE_URL at a server that has it)")

	mu.Lock()
	defer mu.Unlock()
	var plan string
	for _, p := range plans {
		if strings.Contains(p, "FROM outbox") {
			plan = p
		}
	}
	require.NotEmpty(t, plan, "auto_explain reported Parked's statement: %q", plans)
	m := regexp.MustCompile(`Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?`).FindStringSubmatch(plan) // the top node's: the statement's
	require.NotNil(t, m, plan)
	hit, _ := strconv.Atoi(m[1])
	read, _ := strconv.Atoi(m[2])
	require.Less(t, hit+read, 100, "Parked reads %d pages:\n%s", hit+read, plan)
	t.Logf("Parked read %d pages of 250,000 rows in the parked index:\n%s", hit+read, plan)
	require.EqualValues(t, outbox.ParkedCap, n, "counted up to the cap")

	// Below the cap it counts exactly: the row parked for good, none whose
	// park ended or that was never parked.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE source_partition = 0 AND id % 1000 <> 0`)
	require.NoError(t, err)
	n, err = outbox.Parked(ctx, st.Pool)
	require.NoError(t, err)
	require.EqualValues(t, 201, n)
}
