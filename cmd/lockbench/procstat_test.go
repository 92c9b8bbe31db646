package main

import (
	"fmt"
	"os"
	"path/filepath"
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
	stat := fmt.Sprintf("%d (%s) S %d 0 0 0 -1 0 0 0 0 0 %d %d %d %d 20 0 1 0 12345 0 0\n", pid, comm, ppid, u, s, cu, cs)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
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
	p.set(t, 200, "postgres", 1, 1000, 1000, 9000, 9000)
	p.set(t, 201, "postgres", 200, 7000, 7000, 0, 0) // another cluster's backend
	p.set(t, 300, "my (odd) proc", 101, 999, 999, 0, 0)
	tick := time.Second / clockTick

	pm, err := postmasterOf(string(p), 101)
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

	_, err = postmasterOf(string(p), 300)
	require.ErrorContains(t, err, "not a postgres process in")
	_, err = postmasterOf(string(p), 999)
	require.ErrorContains(t, err, "not a postgres process in")
	p.set(t, 400, "postgres", 300, 1, 1, 0, 0)
	_, err = postmasterOf(string(p), 400)
	require.ErrorContains(t, err, "parent (pid 300)")
}

func TestReadStatOddName(t *testing.T) {
	p := fakeProc(t.TempDir())
	p.set(t, 300, "my (odd) proc", 7, 12, 3, 4, 5)
	s, err := readStat(filepath.Join(string(p), "300", "stat"))
	require.NoError(t, err)
	tick := time.Second / clockTick
	require.Equal(t, procStat{comm: "my (odd) proc", ppid: 7, own: 15 * tick, children: 9 * tick}, s)
}
