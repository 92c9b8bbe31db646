package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/procstat"
	"github.com/omninode/lockworker/internal/testdb"
)

// fakeProc lays out /proc/<pid>/stat files under a directory.
type fakeProc string

// set writes pid's stat: times in clock ticks (utime, stime, cutime, cstime).
func (p fakeProc) set(t *testing.T, pid int, comm string, ppid int, u, s, cu, cs int) {
	t.Helper()
	dir := filepath.Join(string(p), fmt.Sprint(pid))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	stat := fmt.Sprintf("%d (%s) S %d 0 0 0 -1 0 0 0 0 0 %d %d %d %d 20 0 1 0 12345 0 0\n", pid, comm, ppid, u, s, cu, cs)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
}

// server lays out a server: a postmaster, its checkpointer, background
// writer and walwriter (pm+1 to pm+3) and a backend (pm+4). It returns the
// background pids, as serverProcsQuery would. There is no proc/stat: the
// check reads no boot time, nor any clock.
func (p fakeProc) server(t *testing.T, pm int) []int {
	t.Helper()
	p.set(t, pm, "postgres", 1, 50, 20, 0, 0)
	for i := 1; i <= 3; i++ {
		p.set(t, pm+i, "postgres", pm, 1, 1, 0, 0)
	}
	p.set(t, pm+4, "postgres", pm, 300, 100, 0, 0)
	return []int{pm + 1, pm + 2, pm + 3}
}

func (p fakeProc) exit(t *testing.T, pid int) {
	require.NoError(t, os.RemoveAll(filepath.Join(string(p), fmt.Sprint(pid))))
}

// TestPostmasterCPU: PostgreSQL's CPU is its server's tree alone, and a
// backend that exits and is reaped keeps counting, through the postmaster.
func TestPostmasterCPU(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 100, "postgres", 1, 50, 20, 0, 0)     // the postmaster
	p.set(t, 101, "postgres", 100, 300, 100, 0, 0) // a backend
	p.set(t, 102, "postgres", 100, 40, 10, 5, 5)   // the archiver, its commands reaped
	bg := []int{103, 104, 105}                     // checkpointer, background writer, walwriter
	for _, pid := range bg {
		p.set(t, pid, "postgres", 100, 0, 0, 0, 0)
	}
	p.set(t, 200, "postgres", 1, 1000, 1000, 9000, 9000)
	p.set(t, 201, "postgres", 200, 7000, 7000, 0, 0) // another cluster's backend
	p.set(t, 300, "my (odd) proc", 101, 999, 999, 0, 0)
	tick := time.Second / procstat.ClockTick

	pm, err := postmasterOf(string(p), 101, bg)
	require.NoError(t, err)
	require.Equal(t, 100, pm.pid)
	before, err := pm.cpu()
	require.NoError(t, err)
	require.Equal(t, (50+20)*tick+(300+100)*tick+(40+10+5+5)*tick, before)

	// The backend works 10 ticks more, exits and is reaped: its CPU moves
	// to the postmaster's children time.
	p.exit(t, 101)
	p.set(t, 100, "postgres", 1, 50, 20, 310, 100)
	after, err := pm.cpu()
	require.NoError(t, err)
	require.Equal(t, before+10*tick, after)

	_, err = postmasterOf(string(p), 300, bg)
	require.ErrorContains(t, err, "not a postgres process in")
	_, err = postmasterOf(string(p), 999, bg)
	require.ErrorContains(t, err, "not a postgres process in")
	p.set(t, 400, "postgres", 300, 1, 1, 0, 0)
	_, err = postmasterOf(string(p), 400, bg)
	require.ErrorContains(t, err, "parent of lockbench's backend")
}

// TestPostmasterOfAnotherServer: a backend pid that is a local postgres
// process's only by chance (the server is in a container or on another
// machine, and a local server has a backend of that pid) is told apart by
// the server's background processes, which must all be children of the
// same postmaster as the backend. No clock is read: this fake proc has no
// stat file, so no boot time.
func TestPostmasterOfAnotherServer(t *testing.T) {
	p := fakeProc(t.TempDir())
	a := p.server(t, 100)                      // backend 104
	b := p.server(t, 200)                      // backend 204
	p.set(t, 105, "postgres", 100, 0, 0, 0, 0) // server 100's autovacuum launcher
	p.set(t, 106, "sh", 100, 0, 0, 0, 0)       // not postgres, though a child
	p.set(t, 107, "postgres", 104, 0, 0, 0, 0) // a grandchild
	p.set(t, 30, "systemd-journal", 1, 0, 0, 0, 0)
	for _, c := range []struct {
		name       string
		background []int
		same       bool
	}{
		{"its own three", a, true},
		// A role that cannot see backend_type gets every process with
		// neither a database nor a user.
		{"a role without pg_read_all_stats", append(slices.Clone(a), 105), true},
		{"a container's (pids here nobody's or not postgres)", []int{30, 31, 33}, false},
		{"another local server's", b, false},
		{"one of another server's", []int{101, 102, 203}, false},
		{"a child not named postgres", []int{101, 102, 106}, false},
		{"a grandchild", []int{101, 102, 107}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pm, err := postmasterOf(string(p), 104, c.background)
			if c.same {
				require.NoError(t, err)
				require.Equal(t, 100, pm.pid)
				return
			}
			require.ErrorContains(t, err, "another server's")
			require.Nil(t, pm)
		})
	}
	_, err := postmasterOf(string(p), 104, nil)
	require.ErrorContains(t, err, "lists none of the server's background processes")
}

// TestPostmasterOfNoteHasNoPid: the errors, which become the report's
// notes, read the same for every backend, so that a note is added once
// however many targets a run connects.
func TestPostmasterOfNoteHasNoPid(t *testing.T) {
	p := fakeProc(t.TempDir())
	bgA, bgB := p.server(t, 100), p.server(t, 200)
	p.set(t, 300, "bash", 1, 0, 0, 0, 0)
	p.set(t, 301, "postgres", 300, 0, 0, 0, 0)
	p.set(t, 400, "sleep", 1, 0, 0, 0, 0)
	p.set(t, 401, "postgres", 400, 0, 0, 0, 0)
	for _, pair := range []struct {
		a, b     int
		bga, bgb []int
	}{
		{998, 999, bgA, bgB}, // nobody's pid here
		{301, 401, bgA, bgB}, // a postgres whose parent is not
		{104, 204, bgB, bgA}, // another server's
		{104, 204, nil, nil}, // no background process listed
	} {
		_, ea := postmasterOf(string(p), pair.a, pair.bga)
		_, eb := postmasterOf(string(p), pair.b, pair.bgb)
		require.Error(t, ea)
		require.Equal(t, ea.Error(), eb.Error())
		msg := strings.ReplaceAll(ea.Error(), string(p), "/proc")
		for _, pid := range append([]int{pair.a, pair.b, 100, 200, 300, 400}, append(bgA, bgB...)...) {
			require.NotContains(t, msg, fmt.Sprint(pid))
		}
	}
}

func TestReadStatOddName(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 300, "my (odd) proc", 7, 12, 3, 4, 5)
	s, err := procstat.Read(filepath.Join(string(p), "300", "stat"))
	require.NoError(t, err)
	tick := time.Second / procstat.ClockTick
	require.Equal(t, procstat.Stat{Comm: "my (odd) proc", State: 'S', PPID: 7, TPGID: -1, Own: 15 * tick, Children: 9 * tick, Start: 12345}, s)
}

// TestReadStatTruncated: a stat line that ends before starttime is an
// error, not a panic.
func TestReadStatTruncated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	for _, c := range []struct {
		line string
		ok   bool
	}{
		{"300 (postgres) S 1 300 300 0 -1 4194560 10 0 0 0 50 20 0 0 20 0 1 0", false},     // up to itrealvalue
		{"300 (postgres) S 1 300 300 0 -1 4194560 10 0 0 0 50 20 0 0 20 0 1 0 4711", true}, // and starttime
	} {
		require.NoError(t, os.WriteFile(path, []byte(c.line+"\n"), 0o644))
		_, err := procstat.Read(path)
		if c.ok {
			require.NoError(t, err, c.line)
		} else {
			require.ErrorContains(t, err, "unexpected", c.line)
		}
	}
}

// TestPostmasterCPUReapedDuringScan: a child reaped between the scan of the
// children and the postmaster's second reading counts twice; when every
// scan meets a reap, the figure is the smallest of the scans, the least
// counted twice, never a child missed.
func TestPostmasterCPUReapedDuringScan(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 100, "postgres", 1, 50, 20, 0, 0)
	cpus := []int{10, 30, 20, 40, 50, 60} // children 101-106: utime in ticks
	for i, c := range cpus {
		p.set(t, 101+i, "postgres", 100, c, 0, 0, 0)
	}
	tick := time.Second / procstat.ClockTick
	truth := (50 + 20 + 10 + 30 + 20 + 40 + 50 + 60) * tick

	pm, err := postmasterOf(string(p), 101, []int{104, 105, 106}) // as if the background processes
	require.NoError(t, err)
	reaped := 0
	pm.afterScan = func() { // each scan, reap the next child
		if reaped == len(cpus) {
			return
		}
		p.exit(t, 101+reaped)
		reaped++
		sum := 0
		for _, c := range cpus[:reaped] {
			sum += c
		}
		p.set(t, 100, "postgres", 1, 50, 20, sum, 0)
	}
	got, err := pm.cpu()
	require.NoError(t, err)
	require.Equal(t, 5, reaped, "a scan with a reap is followed by another, five at most")
	require.Equal(t, truth+10*tick, got, "the first scan's total counted only child 101 (10 ticks) twice, the fewest")

	// With no reap during the scan, the figure is exact.
	pm.afterScan = nil
	got, err = pm.cpu()
	require.NoError(t, err)
	require.Equal(t, truth, got)
}

// TestReadStatManyTicks: ten billion ticks (three years of CPU) do not
// overflow on the way to a time.Duration.
func TestReadStatManyTicks(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 300, "postgres", 1, 10_000_000_000, 0, 0, 0)
	s, err := procstat.Read(filepath.Join(string(p), "300", "stat"))
	require.NoError(t, err)
	require.Equal(t, 100_000_000*time.Second, s.Own)
}

// TestCPUReadingFailed: a figure whose reading failed at either end of a
// window is not measured (nil), not a difference from zero.
func TestCPUReadingFailed(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 100, "postgres", 1, 50, 20, 0, 0)
	p.set(t, 101, "postgres", 100, 30, 0, 0, 0)
	p.set(t, 102, "postgres", 100, 0, 0, 0, 0) // the checkpointer
	p.set(t, 500, "lockworker", 1, 200, 100, 0, 0)
	pm, err := postmasterOf(string(p), 101, []int{102})
	require.NoError(t, err)
	worker := fakeWorker{p, 500}

	a := takeCPU(worker, nil, pm)
	require.True(t, a.workerOK)
	require.True(t, a.pgOK)
	require.False(t, a.brokerOK, "no broker process")
	require.False(t, cpuBetween(a, a).brokerLost, "no broker process: nothing lost")
	p.exit(t, 100) // the postmaster's stat cannot be read
	p.exit(t, 500)
	b := takeCPU(worker, nil, pm)
	require.False(t, b.workerOK)
	require.False(t, b.pgOK)
	u := cpuBetween(a, b)
	require.Nil(t, u.WorkerCPU)
	require.Nil(t, u.PostgresCPU)
	require.Nil(t, u.BrokerCPU)
	require.NotNil(t, u.LockbenchCPU, "lockbench's own reading did not fail")

	// A broker process whose reading fails leaves no CPU per command: it
	// would be the worker's and PostgreSQL's alone.
	p.set(t, 100, "postgres", 1, 60, 20, 0, 0)
	p.set(t, 500, "lockworker", 1, 300, 100, 0, 0)
	p.set(t, 600, "devkafka", 1, 100, 0, 0, 0)
	broker := fakeWorker{p, 600}
	c := takeCPU(worker, broker, pm)
	require.True(t, c.brokerOK)
	p.exit(t, 600)
	u = cpuBetween(c, takeCPU(worker, broker, pm))
	require.NotNil(t, u.WorkerCPU)
	require.NotNil(t, u.PostgresCPU)
	require.Nil(t, u.BrokerCPU)
	_, ok := cpuPerCommand(ThroughputResult{Commands: 100, CPU: u})
	require.False(t, ok)
	p.set(t, 600, "devkafka", 1, 200, 0, 0, 0)
	_, ok = cpuPerCommand(ThroughputResult{Commands: 100, CPU: cpuBetween(c, takeCPU(worker, broker, pm))})
	require.True(t, ok)

	// Failed at the start, read at the end: still no figure.
	p.set(t, 100, "postgres", 1, 60, 20, 0, 0)
	p.set(t, 500, "lockworker", 1, 300, 100, 0, 0)
	u = cpuBetween(b, takeCPU(worker, nil, pm))
	require.Nil(t, u.WorkerCPU)
	require.Nil(t, u.PostgresCPU)
}

// fakeWorker is a pidProc under a fakeProc.
type fakeWorker struct {
	p   fakeProc
	pid int
}

func (w fakeWorker) describe() string { return "fake" }
func (w fakeWorker) cpu() (time.Duration, error) {
	s, err := procstat.Read(filepath.Join(string(w.p), fmt.Sprint(w.pid), "stat"))
	return s.Own, err
}
func (w fakeWorker) peakRSS() (int64, error) { return 0, nil }

// TestFindPostmasterLive: on the test database's server, when it runs on
// this machine, serverProcsQuery's background processes are children of
// the backend's parent, both for the connecting role and for a role that
// is neither a superuser nor a member of pg_read_all_stats, which sees no
// backend_type but the background processes' pids. The role is created in
// a transaction that is rolled back.
func TestFindPostmasterLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, testdb.NewSchema(t).URL)
	require.NoError(t, err)
	defer pool.Close()
	backend, all, err := serverProcs(ctx, pool)
	require.NoError(t, err)
	require.NotEmpty(t, all)
	// Only a server elsewhere (another machine, a container) is a reason
	// to skip; any other failure to find it here is one.
	if s, err := procstat.Read(fmt.Sprintf("/proc/%d/stat", backend)); err != nil || s.Comm != "postgres" {
		testdb.SkipMissing(t, "the test database's server is not on this machine (its backend %d is not a postgres process here): "+
			"run PostgreSQL on the machine that runs the tests", backend)
	}
	pm, err := postmasterOf("/proc", backend, all)
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	role := fmt.Sprintf("lockbench_probe_%d", time.Now().UnixNano())
	if _, err := tx.Exec(ctx, "CREATE ROLE "+role+" NOLOGIN"); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // only the right to create roles missing skips
			t.Fatalf("creating a role: %v", err)
		}
		testdb.SkipMissing(t, "no role to test with: %v: the test user needs to be a superuser or have CREATEROLE", err)
	}
	_, err = tx.Exec(ctx, "SET LOCAL ROLE "+role)
	require.NoError(t, err)
	var types []string
	require.NoError(t, tx.QueryRow(ctx, `SELECT ARRAY(SELECT coalesce(backend_type, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid())`).Scan(&types))
	for _, ty := range types {
		require.Empty(t, ty, "the plain role sees no backend_type but its own sessions'")
	}
	tb, plain, err := serverProcs(ctx, tx)
	require.NoError(t, err)
	require.Equal(t, backend, tb, "one connection")
	require.NotEmpty(t, plain)
	pm2, err := postmasterOf("/proc", tb, plain)
	require.NoError(t, err)
	require.Equal(t, pm.pid, pm2.pid)
}

// TestPostmasterCPUWithout: a backend of lockbench's own (--pg-sample's
// connection) is left out of PostgreSQL's CPU while it lives; the rest of
// the tree, and the original, count as before.
func TestPostmasterCPUWithout(t *testing.T) {
	p := fakeProc(t.TempDir())
	bg := p.server(t, 100)                       // backend 104: 400 ticks
	p.set(t, 105, "postgres", 100, 70, 30, 0, 0) // the sampler's backend
	tick := time.Second / procstat.ClockTick
	pm, err := postmasterOf(string(p), 104, bg)
	require.NoError(t, err)
	all, err := pm.cpu()
	require.NoError(t, err)
	got, err := pm.without(105).cpu()
	require.NoError(t, err)
	require.Equal(t, all-100*tick, got)
	again, err := pm.cpu()
	require.NoError(t, err)
	require.Equal(t, all, again, "pm itself still counts it")
}
