package worker_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/worker"
)

// vacuumRecorder is a worker.VacuumMetrics that keeps what it is told.
type vacuumRecorder struct {
	mu   sync.Mutex
	dead map[string]int64
	runs map[string]int
}

func (r *vacuumRecorder) TableDeadRows(table string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead == nil {
		r.dead = map[string]int64{}
	}
	r.dead[table] = max(r.dead[table], n)
}

func (r *vacuumRecorder) VacuumRun(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	r.runs[result]++
}

func (r *vacuumRecorder) snapshot() (map[string]int64, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.dead), maps.Clone(r.runs)
}

// churnLocks leaves 64*rounds dead row versions in locks, as acquires and
// releases do, and waits until the statistics count them.
func churnLocks(t *testing.T, st *store.Store, rounds int) {
	t.Helper()
	ctx := context.Background()
	// Where autovacuum runs, it would clear the dead rows at its own time
	// (migration 007: after 1,000) and race the loop.
	_, err := st.Pool.Exec(ctx, `ALTER TABLE locks SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO locks (lock_name, status, source_partition) SELECT 'churn-' || i, 'released', 0 FROM generate_series(1, 64) i`)
	require.NoError(t, err)
	for range rounds {
		_, err := st.Pool.Exec(ctx, `UPDATE locks SET updated_at = clock_timestamp(), acquisition_count = acquisition_count + 1`)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return deadRows(t, st, "locks") >= int64(64*rounds) }, 10*time.Second, 20*time.Millisecond)
}

func deadRows(t *testing.T, st *store.Store, table string) int64 {
	t.Helper()
	return tableStats(t, st, table).DeadRows
}

// tableStats returns what the statistics say of one hot table now.
func tableStats(t *testing.T, st *store.Store, table string) store.TableStats {
	t.Helper()
	stats, err := st.ReadTableStats(context.Background())
	require.NoError(t, err)
	for _, s := range stats {
		if s.Table == table {
			return s
		}
	}
	t.Fatalf("no statistics of %s", table)
	return store.TableStats{}
}

// startVacuumer runs v until the test ends and returns a channel closed
// when Run has returned.
func startVacuumer(t *testing.T, v *worker.Vacuumer) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return done
}

// TestVacuumerVacuumsChurn: dead rows left by churn are vacuumed away,
// whether autovacuum runs on this server or not (past DeadRows it steps in
// either way), and the loop says so in its status and metrics.
func TestVacuumerVacuumsChurn(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	churnLocks(t, st, 40) // 2,560 dead rows
	rec := &vacuumRecorder{}
	v, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: true, Interval: 20 * time.Millisecond, DeadRows: 1000, Metrics: rec})
	require.NoError(t, err)
	startVacuumer(t, v)

	waitVacuumed(t, v, "locks")
	require.Eventually(t, func() bool { return deadRows(t, st, "locks") < 1000 }, 30*time.Second, 20*time.Millisecond)
	s := v.Status()
	require.True(t, s.Enabled)
	require.NotNil(t, s.Settings)
	require.NotNil(t, s.LastRun)
	require.Equal(t, int64(1000), s.DeadRowsBound)
	require.Len(t, s.Tables, len(store.HotTables))
	require.Empty(t, s.Error)
	dead, runs := rec.snapshot()
	require.GreaterOrEqual(t, dead["locks"], int64(2560))
	require.Positive(t, runs[worker.VacuumDone])
	require.Zero(t, runs[worker.VacuumFailed])
}

// TestVacuumerTakesTurns: while another replica vacuums the schema (holds
// the vacuum lock), the loop does not vacuum, counts the pass as busy, and
// vacuums once the other is done.
func TestVacuumerTakesTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	churnLocks(t, st, 40)
	other, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer other.Release()
	_, err = other.Exec(ctx, `SELECT pg_advisory_lock($1, hashtext(current_schema()))`, store.VacuumLockClass)
	require.NoError(t, err)

	rec := &vacuumRecorder{}
	v, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: true, Interval: 20 * time.Millisecond, DeadRows: 1000, Metrics: rec})
	require.NoError(t, err)
	startVacuumer(t, v)
	require.Eventually(t, func() bool {
		_, runs := rec.snapshot()
		return runs[worker.VacuumBusy] >= 3
	}, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, v.Status().Runs)
	require.GreaterOrEqual(t, deadRows(t, st, "locks"), int64(2560), "nothing vacuumed while the other replica was")

	_, err = other.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, store.VacuumLockClass)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return v.Status().Runs > 0 }, 10*time.Second, 20*time.Millisecond)
}

// TestVacuumerDisabled: with VACUUM_ENABLED=false the loop checks the
// settings, says so, and vacuums nothing however many dead rows pile up.
func TestVacuumerDisabled(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	churnLocks(t, st, 40)
	rec := &vacuumRecorder{}
	v, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: false, Interval: 10 * time.Millisecond, DeadRows: 100, Metrics: rec})
	require.NoError(t, err)
	select {
	case <-startVacuumer(t, v):
	case <-time.After(10 * time.Second):
		t.Fatal("a disabled Vacuumer's Run did not return")
	}
	s := v.Status()
	require.False(t, s.Enabled)
	require.NotNil(t, s.Settings, "the settings are still checked and reported")
	require.Zero(t, s.Runs)
	dead, runs := rec.snapshot()
	require.Empty(t, dead)
	require.Empty(t, runs)
	var vacuums int64
	require.NoError(t, st.Pool.QueryRow(context.Background(),
		`SELECT sum(vacuum_count) FROM pg_stat_user_tables WHERE schemaname = current_schema()`).Scan(&vacuums))
	require.Zero(t, vacuums)
	require.GreaterOrEqual(t, deadRows(t, st, "locks"), int64(2560))
}

// stoppingRecorder is a vacuumRecorder that calls stop when first told of a
// table's dead rows: in the pass, once the statistics are read and before
// the VACUUM.
type stoppingRecorder struct {
	vacuumRecorder
	stop func()
}

func (r *stoppingRecorder) TableDeadRows(table string, n int64) {
	r.stop()
	r.vacuumRecorder.TableDeadRows(table, n)
}

// TestVacuumerStopIsNoFailure: a VACUUM cut short because the worker is
// stopping (Run's context ended) is neither counted as a failed run nor
// reported as the loop's error.
func TestVacuumerStopIsNoFailure(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	churnLocks(t, st, 40) // due: 2,560 dead rows
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &stoppingRecorder{stop: cancel}
	v, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: true, Interval: 10 * time.Millisecond, DeadRows: 1000, Metrics: rec})
	require.NoError(t, err)
	v.Run(ctx) // returns once ctx has ended
	dead, runs := rec.snapshot()
	require.GreaterOrEqual(t, dead["locks"], int64(2560), "the pass got to the VACUUM")
	require.Zero(t, runs[worker.VacuumFailed], "runs: %v", runs)
	s := v.Status()
	require.Empty(t, s.Error)
	require.Zero(t, s.Runs)
}

// TestVacuumerDisabledRetriesCheck: with VACUUM_ENABLED=false, a settings
// check that fails (PostgreSQL restarting as the worker starts) is retried
// until it works, where Run gave up at once and /health/locks never showed
// the settings: the loop's failure is in the status meanwhile, and once the
// check works the settings are, and it is said that the loop is off.
func TestVacuumerDisabledRetriesCheck(t *testing.T) {
	t.Parallel()
	schema := testdb.NewSchema(t)
	url, proxy := testdb.Proxied(t, schema.URL)
	st := testdb.Schema{Name: schema.Name, URL: url}.Open(t, store.Config{})
	proxy.Cut()
	var logs testlog.Buffer
	v, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: false, Interval: 10 * time.Millisecond, Logger: zerolog.New(&logs)})
	require.NoError(t, err)
	done := startVacuumer(t, v)
	require.Eventually(t, func() bool { return v.Status().Error != "" }, 10*time.Second, 5*time.Millisecond)
	require.Contains(t, logs.String(), `"message":"checking whether autovacuum runs"`)
	require.Nil(t, v.Status().Settings)
	select {
	case <-done:
		t.Fatal("Run gave up on the settings check")
	default:
	}

	proxy.Restore()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a disabled Vacuumer's Run did not return once the check worked")
	}
	s := v.Status()
	require.NotNil(t, s.Settings)
	require.Empty(t, s.Error)
	require.Contains(t, logs.String(), "the worker's vacuum loop is off")
}

// TestVacuumerVacuumsGrownTables: a connection's generic plan of the
// prefetch, made while processed_requests held a few hundred rows (as in a
// new schema's first second), is a sequential scan; once the table has
// grown, the loop vacuums it, which counts its rows for the planner, and the
// same prepared statement is planned again, by its primary key.
func TestVacuumerVacuumsGrownTables(t *testing.T) {
	t.Parallel()
	// The premise, a generic plan made on the small table and kept as it
	// grows, can be lost to an invalidation this test does not make: under
	// the schema churn of parallel test packages PostgreSQL may reset a
	// backend's caches (its invalidation queue overflows), which replans
	// from the grown table. Then the test starts over on a fresh schema.
	var st *store.Store
	var plan func() string
	for attempt := 1; ; attempt++ {
		var kept bool
		var release func()
		st, plan, release, kept = grownWithSmallPlan(t)
		if kept {
			break
		}
		release()
		st.Close()
		require.Less(t, attempt, 3, "the cached plan was replanned before the vacuumer ran, %d times", attempt)
		t.Logf("attempt %d: the cached plan was replanned as the table grew, by an invalidation not the test's; starting over", attempt)
	}

	v, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: true, Interval: 20 * time.Millisecond})
	require.NoError(t, err)
	startVacuumer(t, v)
	waitVacuumed(t, v, "processed_requests")
	require.Contains(t, plan(), "Index", "planned again from the new statistics")
	require.InDelta(t, 5000, tableStats(t, st, "processed_requests").StatsRows, 500)
	// Passes that find the statistics current leave it alone (one more
	// may have begun before the first VACUUM's statistics were read).
	runs := v.Status().Runs
	require.Never(t, func() bool { return v.Status().Runs > runs+1 }, 300*time.Millisecond, 20*time.Millisecond)
}

// grownWithSmallPlan makes a schema whose processed_requests holds 300
// rows, gives a connection a generic plan of the worker's prefetch on it,
// grows the table to 5,000 rows and returns the store, the plan as that
// connection has it cached now, the connection's release, and whether the
// plan was kept (a sequential scan).
func grownWithSmallPlan(t *testing.T) (*store.Store, func() string, func(), bool) {
	t.Helper()
	ctx := context.Background()
	st := testdb.New(t)
	set, err := st.ReadVacuumSettings(ctx)
	require.NoError(t, err)
	if !set.TrackCounts {
		testdb.SkipMissing(t, "track_counts is off on this server: the loop vacuums every table every pass, grown or not; "+
			"turn it on (track_counts = on in postgresql.conf, its default)")
	}
	// Autovacuum would count the rows at its own time and race the loop.
	_, err = st.Pool.Exec(ctx, `ALTER TABLE processed_requests SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	fill := func(n int) {
		// Outcomes of the size the worker stores, inserted by a session of
		// its own: a backend reports its counts when it exits, where an idle
		// one may wait ten seconds.
		conn, err := pgx.ConnectConfig(ctx, st.Pool.Config().ConnConfig.Copy())
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, `INSERT INTO processed_requests (request_id, outcome, reply_to)
			SELECT gen_random_uuid()::text, decode(repeat('ab', 120), 'hex'), 'lock.replies.client-1' FROM generate_series(1, $1::int)`, n)
		require.NoError(t, err)
	}
	fill(300)
	c, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	release := sync.OnceFunc(c.Release) // before the pool's close, however the test ends
	t.Cleanup(release)
	_, err = c.Conn().Prepare(ctx, "prefetch", `SELECT request_id, outcome, reply_to FROM processed_requests WHERE request_id = ANY($1)`)
	require.NoError(t, err)
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("absent-%d", i)
	}
	for range 6 { // PostgreSQL settles on a generic plan after five custom ones
		_, err := c.Exec(ctx, "prefetch", ids)
		require.NoError(t, err)
	}
	plan := func() string { return testdb.CachedPlan(t, c.Conn(), "prefetch") }
	require.Contains(t, plan(), "Seq Scan", "the premise: the generic plan made on a small table")

	fill(4700)
	waitLiveRows(t, st, "processed_requests", 5000)
	return st, plan, release, strings.Contains(plan(), "Seq Scan")
}

// waitVacuumed waits until v's last VACUUM took table.
func waitVacuumed(t *testing.T, v *worker.Vacuumer, table string) {
	t.Helper()
	require.Eventually(t, func() bool {
		s := v.Status()
		return s.Runs > 0 && slices.Contains(s.LastTables, table)
	}, 10*time.Second, 20*time.Millisecond)
}

// waitLiveRows waits until the statistics count at least n live rows in
// table (backends report them up to a second late).
func waitLiveRows(t *testing.T, st *store.Store, table string, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return tableStats(t, st, table).LiveRows >= n }, 10*time.Second, 20*time.Millisecond)
}
