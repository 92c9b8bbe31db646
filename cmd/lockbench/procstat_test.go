package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeProc lays out /proc/<pid>/stat files under a directory.
type fakeProc string

// set writes pid's stat: times in clock ticks (utime, stime, cutime, cstime).
func (p fakeProc) set(t *testing.T, pid int, comm string, ppid int, u, s, cu, cs int) {
	t.Helper()
	dir := filepath.Join(string(p), fmt.Sprint(pid))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	stat := fmt.Sprintf("%d (%s) S %d 0 0 0 -1 0 0 0 0 0 %d %d %d %d 20 0 1 0 %d 0 0\n", pid, comm, ppid, u, s, cu, cs, fakeStart)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
}

// fakeStart is when every fakeProc process started, in ticks since boot.
const fakeStart = 12345

// boot writes the stat file's btime; it returns when the fake processes
// started.
func (p fakeProc) boot(t *testing.T, btime int64) time.Time {
	t.Helper()
	stat := fmt.Sprintf("cpu  1 2 3 4 5 6 7 8 0 0\nintr 0\nctxt 0\nbtime %d\nprocesses 1\n", btime)
	require.NoError(t, os.WriteFile(filepath.Join(string(p), "stat"), []byte(stat), 0o644))
	return time.Unix(btime, 0).Add(fakeStart * time.Second / clockTick)
}

func (p fakeProc) exit(t *testing.T, pid int) {
	require.NoError(t, os.RemoveAll(filepath.Join(string(p), fmt.Sprint(pid))))
}

// TestPostmasterCPU: PostgreSQL's CPU is its server's tree alone, and a
// backend that exits and is reaped keeps counting, through the postmaster.
func TestPostmasterCPU(t *testing.T) {
	p := fakeProc(t.TempDir())
	started := p.boot(t, 1_700_000_000)
	p.set(t, 100, "postgres", 1, 50, 20, 0, 0)     // the postmaster
	p.set(t, 101, "postgres", 100, 300, 100, 0, 0) // a backend
	p.set(t, 102, "postgres", 100, 40, 10, 5, 5)   // the archiver, its commands reaped
	p.set(t, 200, "postgres", 1, 1000, 1000, 9000, 9000)
	p.set(t, 201, "postgres", 200, 7000, 7000, 0, 0) // another cluster's backend
	p.set(t, 300, "my (odd) proc", 101, 999, 999, 0, 0)
	tick := time.Second / clockTick

	pm, err := postmasterOf(string(p), 101, started)
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

	_, err = postmasterOf(string(p), 300, started)
	require.ErrorContains(t, err, "not a postgres process in")
	_, err = postmasterOf(string(p), 999, started)
	require.ErrorContains(t, err, "not a postgres process in")
	p.set(t, 400, "postgres", 300, 1, 1, 0, 0)
	_, err = postmasterOf(string(p), 400, started)
	require.ErrorContains(t, err, "parent of lockbench's backend")
}

// TestPostmasterOfAnotherServer: a backend pid that is a local postgres
// process's only by chance (the server is in a container or on another
// machine, and a local server has a backend of that pid) is told apart by
// when its postmaster started.
func TestPostmasterOfAnotherServer(t *testing.T) {
	p := fakeProc(t.TempDir())
	local := p.boot(t, 1_700_000_000)
	p.set(t, 100, "postgres", 1, 50, 20, 0, 0)
	p.set(t, 101, "postgres", 100, 300, 100, 0, 0)
	for _, c := range []struct {
		name    string
		started time.Time
		same    bool
	}{
		{"same start", local, true},
		// btime is whole seconds, rounded down: the server's own time is
		// up to a second after the one computed here, and a moment more.
		{"within the slack, after", local.Add(1500 * time.Millisecond), true},
		{"within the slack, before", local.Add(-time.Second), true},
		{"a minute later", local.Add(time.Minute), false},
		{"a day before", local.Add(-24 * time.Hour), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pm, err := postmasterOf(string(p), 101, c.started)
			if c.same {
				require.NoError(t, err)
				require.Equal(t, 100, pm.pid)
				return
			}
			require.ErrorContains(t, err, "another server's")
			require.Nil(t, pm)
		})
	}
}

// TestPostmasterOfNoteHasNoPid: the errors, which become the report's
// notes, read the same for every backend, so that a note is added once
// however many targets a run connects.
func TestPostmasterOfNoteHasNoPid(t *testing.T) {
	p := fakeProc(t.TempDir())
	started := p.boot(t, 1_700_000_000)
	p.set(t, 100, "postgres", 1, 0, 0, 0, 0)
	p.set(t, 200, "postgres", 1, 0, 0, 0, 0)
	p.set(t, 101, "postgres", 100, 0, 0, 0, 0)
	p.set(t, 201, "postgres", 200, 0, 0, 0, 0)
	p.set(t, 300, "bash", 1, 0, 0, 0, 0)
	p.set(t, 301, "postgres", 300, 0, 0, 0, 0)
	p.set(t, 400, "sleep", 1, 0, 0, 0, 0)
	p.set(t, 401, "postgres", 400, 0, 0, 0, 0)
	for _, pair := range []struct {
		a, b    int
		started time.Time
	}{
		{998, 999, started},                // nobody's pid here
		{301, 401, started},                // a postgres whose parent is not
		{101, 201, started.Add(time.Hour)}, // another server's
	} {
		_, ea := postmasterOf(string(p), pair.a, pair.started)
		_, eb := postmasterOf(string(p), pair.b, pair.started)
		require.Error(t, ea)
		require.Equal(t, ea.Error(), eb.Error())
		msg := strings.ReplaceAll(ea.Error(), string(p), "/proc")
		for _, pid := range []int{pair.a, pair.b, 100, 200, 300, 400} {
			require.NotContains(t, msg, fmt.Sprint(pid))
		}
	}
}

func TestReadStatOddName(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 300, "my (odd) proc", 7, 12, 3, 4, 5)
	s, err := readStat(filepath.Join(string(p), "300", "stat"))
	require.NoError(t, err)
	tick := time.Second / clockTick
	require.Equal(t, procStat{comm: "my (odd) proc", ppid: 7, own: 15 * tick, children: 9 * tick, start: fakeStart}, s)
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
	tick := time.Second / clockTick
	truth := (50 + 20 + 10 + 30 + 20 + 40 + 50 + 60) * tick

	pm, err := postmasterOf(string(p), 101, p.boot(t, 1_700_000_000))
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
	s, err := readStat(filepath.Join(string(p), "300", "stat"))
	require.NoError(t, err)
	require.Equal(t, 100_000_000*time.Second, s.own)
}

// TestCPUReadingFailed: a figure whose reading failed at either end of a
// window is not measured (nil), not a difference from zero.
func TestCPUReadingFailed(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 100, "postgres", 1, 50, 20, 0, 0)
	p.set(t, 101, "postgres", 100, 30, 0, 0, 0)
	p.set(t, 500, "lockworker", 1, 200, 100, 0, 0)
	pm, err := postmasterOf(string(p), 101, p.boot(t, 1_700_000_000))
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
	s, err := readStat(filepath.Join(string(w.p), fmt.Sprint(w.pid), "stat"))
	return s.own, err
}
func (w fakeWorker) peakRSS() (int64, error) { return 0, nil }
