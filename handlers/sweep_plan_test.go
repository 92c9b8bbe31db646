package handlers

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// The worker's connections plan each statement once, generically (see
// store.Open). For every filter shape the sweeps use (the expiry scheduler
// and periodic cleanup by partition, cleanup commands by namespace or one
// lock), the generic plan reads locks as the plan made for the very values
// does: the same scans on the same indexes with the same index conditions.
// ("$1 IS NULL OR namespace = $1" would fail this: only a custom plan can
// drop the half that does not apply.) A cleanup command's statements are
// sent by the simple protocol, planned for their values, but must not need
// to be.
func TestSweepGenericPlansMatchCustom(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := planConn(t)
	// Without sequential scans the planner shows which index conditions
	// it can use even on the test's empty table.
	_, err := conn.Exec(ctx, `SET enable_seqscan = off`)
	require.NoError(t, err)

	ns, name, partition, maxAge := "tenant", "job", int32(3), 3600.0
	shapes := []struct {
		name string
		f    sweepFilter
	}{
		{"expiry scheduler", sweepFilter{partition: &partition, limit: MaxSweep}},
		{"periodic cleanup", sweepFilter{partition: &partition, maxAge: &maxAge, limit: MaxSweep}},
		{"cleanup namespace", sweepFilter{namespace: &ns, maxAge: &maxAge}},
		{"cleanup one lock", sweepFilter{namespace: &ns, name: &name, maxAge: &maxAge}},
	}
	k := 0
	for _, shape := range shapes {
		endSQL, endArgs, idleSQL, idleArgs := shape.f.statements()
		for _, s := range []struct {
			sql  string
			args []any
			// by is the scan by key of the rows read (ended leases: only a
			// cleanup's, the scheduler's read the partition's index) or
			// deleted.
			by string
		}{{endSQL, endArgs, "Index Scan using lock_holders_pkey on lock_holders"}, {idleSQL, idleArgs, "->  Index Scan using locks_pkey on locks"}} {
			if s.args == nil {
				continue
			}
			k++
			generic := scans(t, conn, "force_generic_plan", k, s.sql, s.args)
			custom := scans(t, conn, "force_custom_plan", k, s.sql, s.args)
			require.Equal(t, custom, generic, "%s:\n%s", shape.name, s.sql)
			if shape.f.partition == nil || s.sql == idleSQL {
				require.Contains(t, strings.Join(generic, "\n"), s.by, shape.name)
			}
			if shape.f.partition != nil { // the scheduler's and periodic cleanup's rows, by partition and time
				require.Regexp(t, `Index Cond: \(\(source_partition = \?\) AND \((expires_at <=|updated_at <) \(?statement_timestamp\(\)`, strings.Join(generic, "\n"), shape.name)
			}
		}
	}
}

// planConn is a connection of its own to a fresh test schema, for
// settings and prepared statements the pool's connections must not get.
func planConn(t *testing.T) *pgx.Conn {
	t.Helper()
	pc, err := testdb.New(t).Pool.Acquire(context.Background())
	require.NoError(t, err)
	conn := pc.Hijack()
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

var (
	planParam = regexp.MustCompile(`make_interval\([^()]*\)|\$\d+|'[^']*'::\w+|\b\d+\b`)
	planCost  = regexp.MustCompile(`\s*\(cost=.*\)$`)
)

// scans plans sql under mode and returns its scan and index condition
// lines, parameters and constants replaced by "?".
func scans(t *testing.T, conn *pgx.Conn, mode string, k int, sql string, args []any) []string {
	t.Helper()
	ctx := context.Background()
	stmt := fmt.Sprintf("sweep_%s_%d", mode, k)
	_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, fmt.Sprintf("PREPARE %s AS %s", stmt, sql))
	require.NoError(t, err)
	var lits []string
	for _, a := range args {
		switch v := a.(type) {
		case pgx.QueryExecMode: // how it is sent, not an argument
			continue
		case string:
			a = "'" + v + "'"
		}
		lits = append(lits, fmt.Sprint(a))
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("EXPLAIN EXECUTE %s(%s)", stmt, strings.Join(lits, ", ")))
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	var out []string
	for _, l := range lines {
		if strings.Contains(l, "Scan") || strings.Contains(l, "Cond:") {
			out = append(out, planParam.ReplaceAllString(planCost.ReplaceAllString(strings.TrimSpace(l), ""), "?"))
		}
	}
	return out
}

// A session's end, or many sessions' ending together, finds their locks by
// the session_id indexes under the generic plan, whatever the number of
// sessions: never by a scan of every lease and wait.
func TestSessionLocksPlan(t *testing.T) {
	t.Parallel()
	conn := planConn(t)
	_, err := conn.Exec(context.Background(), `SET enable_seqscan = off`)
	require.NoError(t, err)
	for k, ids := range []string{"{s1}", "{s1,s2,s3}"} {
		plan := strings.Join(scans(t, conn, "force_generic_plan", 100+k, sessionLocksSQL, []any{ids}), "\n")
		require.Contains(t, plan, "lock_holders_session", plan)
		require.Contains(t, plan, "lock_waiters_session", plan)
	}
}
