package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/procstat"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
)

// shReplica is a chaos.Replica running an sh script instead of lockworker:
// body runs after it logs the line Ready waits for.
func shReplica(t *testing.T, name, body string) *chaos.Replica {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho 'lockworker is consuming' >&2\n"+body+"\n"), 0o755))
	r := chaos.NewReplica(name, bin, nil, nil)
	require.NoError(t, r.Start())
	t.Cleanup(func() { _ = r.Kill() })
	return r
}

// exitsOnce is a replica script body that exits 2 at its first start and
// runs at the next (a marker named name in dir tells them apart).
func exitsOnce(dir, name string) string {
	marker := filepath.Join(dir, name)
	return `if [ -e '` + marker + `' ]; then ` + loop + `; fi; touch '` + marker + `'; exit 2`
}

func testFaults(t *testing.T, replicas ...*chaos.Replica) (*replicaFaults, *[]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	for _, r := range replicas {
		require.NoError(t, r.Ready(ctx))
	}
	var said []string
	return &replicaFaults{ctx: ctx, replicas: replicas, readyWithin: 10 * time.Second, retryPause: 10 * time.Millisecond,
		progress: func(format string, args ...any) { said = append(said, fmt.Sprintf(format, args...)) }}, &said
}

// exited waits until r's process is gone.
func exited(t *testing.T, r *chaos.Replica) {
	t.Helper()
	select {
	case <-r.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("replica %s did not exit", r.Name)
	}
}

const loop = `while :; do sleep 0.1; done`

// A replica whose drain fails (exit 1 after SIGTERM) or outlasts the grace
// is an unclean stop counted in the phase, not an error that ends the run;
// one that exits 0 is a clean one.
func TestFailoverCountsUncleanStops(t *testing.T) {
	clean := shReplica(t, "clean", `trap 'exit 0' TERM; `+loop)
	failed := shReplica(t, "failed", `trap 'exit 1' TERM; `+loop)
	hung := shReplica(t, "hung", `trap '' TERM; `+loop)
	f, said := testFaults(t, clean, failed, hung)
	var c faultCounts
	for _, r := range []*chaos.Replica{clean, failed, hung} {
		require.NoError(t, f.term(&c, r, time.Second))
	}
	require.Equal(t, faultCounts{SIGTERMs: 3, UncleanStops: 2}, c)
	require.Len(t, *said, 2)
	require.Contains(t, (*said)[0], "replica failed after SIGTERM: exit status 1")
	require.Contains(t, (*said)[1], "replica hung did not stop within 1s")
	require.NoError(t, f.restart(&c, failed), "it starts again")
}

// A replica that exited with no fault asking is counted and started again
// whether the look after a fault finds it or a fault's stop does.
func TestFailoverCountsExitsUnasked(t *testing.T) {
	dir := t.TempDir()
	running := shReplica(t, "running", loop)
	crashed := shReplica(t, "crashed", exitsOnce(dir, "crashed"))
	f, said := testFaults(t, running, crashed)
	var c faultCounts
	exited(t, crashed)
	require.NoError(t, f.checkExits(&c, 0))
	require.Equal(t, faultCounts{ExitedUnasked: 1}, c)
	require.Contains(t, (*said)[0], "replica crashed exited unasked (exit status 2)")
	require.NoError(t, crashed.Err(), "started again")
	require.NoError(t, running.Err())

	for _, stop := range []func(r *chaos.Replica) error{
		func(r *chaos.Replica) error { return f.kill(&c, r) },
		func(r *chaos.Replica) error { return f.term(&c, r, time.Second) },
	} {
		r := shReplica(t, "gone", exitsOnce(dir, fmt.Sprint("gone", c.ExitedUnasked)))
		exited(t, r)
		require.NoError(t, stop(r))
		require.NoError(t, f.restart(&c, r), "started again")
	}
	require.Equal(t, faultCounts{ExitedUnasked: 3}, c, "not a SIGTERM")
}

// A replica that exits before it is ready when started again is counted
// as a failed start and started again, five tries in all; the fifth
// failure ends the run.
func TestFailoverCountsFailedStarts(t *testing.T) {
	dir := t.TempDir()
	// It exits 2 before it is ready at its first fails starts, then runs.
	failing := func(name string, fails int) *chaos.Replica {
		n := filepath.Join(dir, name)
		bin := filepath.Join(dir, name+".sh")
		require.NoError(t, os.WriteFile(bin, []byte(fmt.Sprintf(`#!/bin/sh
echo x >> '%s'
if [ "$(wc -l < '%s')" -le %d ]; then exit 2; fi
echo 'lockworker is consuming' >&2
%s
`, n, n, fails, loop)), 0o755))
		r := chaos.NewReplica(name, bin, nil, nil)
		t.Cleanup(func() { _ = r.Kill() })
		return r
	}
	f, said := testFaults(t)
	var c faultCounts
	r := failing("twice", 2)
	require.NoError(t, f.restart(&c, r))
	require.Equal(t, faultCounts{FailedStarts: 2}, c)
	require.Len(t, *said, 2)
	require.Contains(t, (*said)[0], "replica twice exited before it was ready (exit status 2); counted, and it starts again")
	require.NoError(t, r.Err(), "running")

	c = faultCounts{}
	err := f.restart(&c, failing("always", 99))
	require.ErrorContains(t, err, "replica always exited before it was ready (exit status 2) (five starts failed)")
	require.Equal(t, faultCounts{FailedStarts: 5}, c)
}

// After checkExits started a replica again it waits the phase's pause, so
// that the rebalance is not charged to the next fault; with nothing to
// start again it does not wait.
func TestFailoverCheckExitsWaitsAfterARestart(t *testing.T) {
	running := shReplica(t, "running", loop)
	// crashed exits 2 once told to (crash exists), at its first start only.
	dir := t.TempDir()
	crash, marker := filepath.Join(dir, "crash"), filepath.Join(dir, "started")
	crashed := shReplica(t, "crashed", `if [ -e '`+marker+`' ]; then `+loop+`; fi; touch '`+marker+`'; `+
		`while [ ! -e '`+crash+`' ]; do sleep 0.05; done; exit 2`)
	f, _ := testFaults(t, running, crashed)
	var c faultCounts
	// Nothing has exited. A pause of a minute, which half of it tells
	// apart from none with room for a busy machine.
	start := time.Now()
	require.NoError(t, f.checkExits(&c, time.Minute))
	require.Less(t, time.Since(start), 30*time.Second, "nothing exited: no pause")
	require.Equal(t, faultCounts{}, c)
	require.NoError(t, os.WriteFile(crash, nil, 0o644))
	exited(t, crashed)
	start = time.Now()
	require.NoError(t, f.checkExits(&c, time.Second))
	require.GreaterOrEqual(t, time.Since(start), time.Second, "a restart, then the pause")
	require.Equal(t, faultCounts{ExitedUnasked: 1}, c)
}

// The phases' unclean stops and exits unasked are columns of the failover
// table and goals of their own.
func TestFailoverReportsUncleanStopsAndExitsUnasked(t *testing.T) {
	f := &FailoverResult{Replicas: 3, Partitions: 16, SessionTimeoutMS: 6000, Commands: 7700, Phases: []FailoverPhase{
		{Fault: "SIGKILL one of three", Times: 2, Commands: 100, faultCounts: faultCounts{ExitedUnasked: 1}},
		{Fault: "SIGTERM one of three", Times: 2, Commands: 100, faultCounts: faultCounts{SIGTERMs: 2, UncleanStops: 1, FailedStarts: 2}},
		{Fault: "rolling restart of all three", Times: 1, Commands: 100, faultCounts: faultCounts{SIGTERMs: 3}},
	}}
	var out bytes.Buffer
	f.print(func(format string, args ...any) { fmt.Fprintf(&out, format, args...) })
	require.Contains(t, out.String(), "corrected p99 ms  unclean stops  exited unasked  failed starts\n")
	require.Contains(t, out.String(), "\n  SIGKILL one of three                  2        100           0          0        0         0                  0              -               1              0\n")
	require.Contains(t, out.String(), "\n  SIGTERM one of three                  2        100           0          0        0         0                  0         1 of 2               0              2\n")
	require.Contains(t, out.String(), "\n  rolling restart of all three          1        100           0          0        0         0                  0         0 of 3               0              0\n")

	var r Report
	r.failoverGoals(f)
	met := map[string]string{}
	for _, g := range r.Goals {
		met[g.What] = g.Measured + " " + map[bool]string{true: "yes", false: "NO"}[g.Met != nil && *g.Met]
	}
	require.Equal(t, "1 of 2 NO", met["SIGTERM exits 0"])
	require.Equal(t, "3 of 3 yes", met["rolling restart: SIGTERM exits 0"])
	require.Equal(t, "1 NO", met["replicas exited unasked (crashed between faults)"])
	require.Equal(t, "2 NO", met["replica starts that failed (exited or not ready)"])
	require.Equal(t, "0 of 7,700 yes", met["unanswered commands"])

	js, err := json.Marshal(f.Phases[1])
	require.NoError(t, err)
	for _, field := range []string{`"sigterms":2`, `"unclean_stops":1`, `"exited_unasked":0`, `"failed_starts":2`} {
		require.Contains(t, string(js), field)
	}
}

// The contract goal is broken by a violation chaos.Check found or by the
// lock state topic left unlike the database; the orphaned-lease goal by an
// abandon-only lease that ended with no lock.expired, however fast the
// others were expired.
func TestFailoverContractAndExpiryGoals(t *testing.T) {
	goals := func(f *FailoverResult) map[string]string {
		var r Report
		r.failoverGoals(f)
		out := map[string]string{}
		for _, g := range r.Goals {
			out[g.What] = g.Measured + " " + map[bool]string{true: "yes", false: "NO"}[g.Met != nil && *g.Met]
		}
		return out
	}
	const contract, expired = "contract (no double holder, tokens rise, one answer, state topic = database)", "lock.expired after takeover (orphaned leases)"
	require.Equal(t, "kept yes", goals(&FailoverResult{})[contract])
	require.Equal(t, "BROKEN NO", goals(&FailoverResult{ContractViolation: "lock /L held twice"})[contract])
	require.Equal(t, "BROKEN NO", goals(&FailoverResult{TableDiff: `lock /L: database "rev=3", topic "rev=2"`})[contract])

	require.Equal(t, "- NO", goals(&FailoverResult{})[expired], "no orphaned lease: not judged")
	require.Equal(t, "12 ms yes", goals(&FailoverResult{Orphaned: 4, ExpiredAfterMS: 12})[expired])
	require.Equal(t, "12 ms, 1 never expired NO", goals(&FailoverResult{Orphaned: 4, ExpiredAfterMS: 12, Unexpired: 1})[expired])
	require.Equal(t, "0 ms, 2 never expired NO", goals(&FailoverResult{Unexpired: 2})[expired])
}

// whole is what fakeStats returns for no window: the whole run's figures,
// which no phase is to report.
var whole = chaos.Stats{Commands: 999999}

// fakeStats stands in for chaos.Load.Stats: a command per window.
func fakeStats(ws ...chaos.Window) chaos.Stats {
	if len(ws) == 0 {
		return whole
	}
	return chaos.Stats{Commands: len(ws), Worst: time.Second}
}

// A fault that fails keeps its window with its counts, so that the phase
// reports the commands it cost, not the whole run's (the stats of no
// window); a phase that struck no fault is not reported.
func TestFailoverPhaseFailingAtItsFirstFaultHasItsWindow(t *testing.T) {
	f, _ := testFaults(t)
	ps := &phases{ctx: context.Background(), faults: f, stats: fakeStats}
	require.NoError(t, ps.run("none", 0, 0, nil))
	err := ps.run("SIGTERM one of three", 3, 0, func(_ int, c *faultCounts) error {
		c.SIGTERMs++
		c.UncleanStops++
		return errors.New("no signal")
	})
	require.EqualError(t, err, "SIGTERM one of three 1: no signal")
	require.Equal(t, []FailoverPhase{{Fault: "SIGTERM one of three", Times: 1, Commands: 1, WorstMS: 1000,
		faultCounts: faultCounts{SIGTERMs: 1, UncleanStops: 1}}}, ps.results())

	pr := &phaseRun{fault: "SIGKILL one of three", times: 1}
	require.Equal(t, FailoverPhase{Fault: "SIGKILL one of three", Times: 1}, pr.result(fakeStats), "no window: no figures")
}

// Consecutive faults' windows, of one phase or of the next, never overlap:
// a command sent just before a fault, which waits for it, counts in that
// fault's phase alone (a cut's 15 s once showed as the rolling restart's).
func TestFailoverWindowsDoNotOverlap(t *testing.T) {
	f, _ := testFaults(t)
	ps := &phases{ctx: context.Background(), faults: f, stats: fakeStats}
	none := func(int, *faultCounts) error { return nil }
	require.NoError(t, ps.run("rolling restart of all three", 2, 0, none))
	require.NoError(t, ps.run("PostgreSQL cut from one of three", 1, 0, none))
	var ws []chaos.Window
	for _, pr := range ps.runs {
		ws = append(ws, pr.windows...)
	}
	require.Len(t, ws, 3)
	for i := 1; i < len(ws); i++ {
		require.False(t, ws[i].From.Before(ws[i-1].To), "window %d begins before window %d ends", i, i-1)
	}
}

// A replica that exits after the last fault's look (while the last
// commands drain) is counted in the last phase.
func TestFailoverCountsAnExitAfterTheLastFault(t *testing.T) {
	running := shReplica(t, "running", loop)
	crashed := shReplica(t, "crashed", `sleep 1; exit 2`)
	f, said := testFaults(t, running, crashed)
	ps := &phases{ctx: context.Background(), faults: f, stats: fakeStats}
	require.NoError(t, ps.run("SIGKILL one of three", 1, 0, func(int, *faultCounts) error { return nil }))
	require.Equal(t, faultCounts{}, ps.runs[0].counts, "it was running at the look")
	exited(t, crashed)
	res := ps.results()
	require.Equal(t, faultCounts{ExitedUnasked: 1}, res[0].faultCounts)
	require.Contains(t, (*said)[len(*said)-1], "replica crashed exited unasked (exit status 2) after the last fault; counted")
}

// A signal (a terminal's Ctrl-C, sent to the whole process group) cuts
// the run short and stops the replicas too, which drain and exit 0: no
// look counts them as exited unasked, or starts them again, and the
// unanswered commands, the orphaned leases, and the last phase's worst
// time to answer and SIGTERM exits, are not judged.
func TestFailoverCountsNoExitAfterASignal(t *testing.T) {
	a := shReplica(t, "a", `trap 'exit 0' INT; `+loop)
	b := shReplica(t, "b", `trap 'exit 0' INT; `+loop)
	f, said := testFaults(t, a, b)
	ctx, cancel := context.WithCancel(context.Background())
	f.ctx = ctx
	ps := &phases{ctx: ctx, faults: f, stats: fakeStats}
	require.NoError(t, ps.run("SIGKILL one of three", 1, 0, func(int, *faultCounts) error { return nil }))
	cancel()
	for _, r := range []*chaos.Replica{a, b} {
		require.NoError(t, r.Signal(syscall.SIGINT))
		exited(t, r)
	}
	var c faultCounts
	require.ErrorIs(t, f.checkExits(&c, 0), context.Canceled)
	require.ErrorIs(t, f.kill(&c, a), context.Canceled, "not started again")
	require.ErrorIs(t, f.term(&c, b, time.Second), context.Canceled, "not started again")
	require.Equal(t, faultCounts{}, c)
	res := ps.results()
	require.Equal(t, faultCounts{}, res[0].faultCounts)
	require.NotContains(t, strings.Join(*said, "\n"), "counted")

	fr := &FailoverResult{Phases: res, CutShort: true, Commands: 100, Unanswered: 3}
	fr.Phases[0].Commands, fr.Phases[0].Unanswered, fr.Phases[0].WorstMS = 100, 3, 200
	r := newReport(&Config{})
	r.failoverGoals(fr)
	for _, g := range r.Goals {
		switch {
		case strings.HasPrefix(g.What, "replicas exited unasked"):
			require.Equal(t, "0", g.Measured)
			require.True(t, *g.Met)
		case strings.HasPrefix(g.What, "unanswered commands"), strings.HasPrefix(g.What, "SIGKILL: worst time"),
			strings.HasPrefix(g.What, "lock.expired after takeover"):
			require.Nil(t, g.Met, g.What)
		}
	}
	require.Contains(t, strings.Join(r.Notes, "\n"), "failover: cut short by a signal")
}

// ticks is a replica script body that appends a line to file every 20 ms:
// a stopped replica's file does not grow.
func ticks(file string) string {
	return `while :; do echo x >> '` + file + `'; sleep 0.02; done`
}

// lines is how many lines file has (none before the replica's first).
func lines(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	require.NoError(t, err)
	return bytes.Count(b, []byte("\n"))
}

// procState is the state letter (R, S, T for stopped, ...) of the process
// whose pid pidFile holds.
func procState(t *testing.T, pidFile string) byte {
	t.Helper()
	pid, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	st, err := procstat.Read("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	require.NoError(t, err)
	return st.State
}

// requireRuns checks that the replica writing file runs: its file grows.
func requireRuns(t *testing.T, file string) {
	t.Helper()
	n := lines(t, file)
	require.Eventually(t, func() bool { return lines(t, file) > n }, 5*time.Second, 10*time.Millisecond, "the replica runs")
}

// A frozen replica does nothing for the freeze and runs again after it,
// the same process, not started again; the run's end during the freeze
// resumes it too, so that no replica is left stopped.
func TestFailoverFreezeResumes(t *testing.T) {
	dir := t.TempDir()
	file, pidFile := filepath.Join(dir, "ticks"), filepath.Join(dir, "pid")
	r := shReplica(t, "frozen", `echo $$ > '`+pidFile+`'; `+ticks(file))
	f, _ := testFaults(t, r)
	requireRuns(t, file)
	stopped := func() bool { return procState(t, pidFile) == 'T' }
	done := make(chan error, 1)
	go func() { done <- f.freeze(r, 2*time.Second) }() // long enough to be seen stopped on a busy machine
	require.Eventually(t, stopped, 5*time.Second, 5*time.Millisecond, "stopped by the freeze")
	require.NoError(t, <-done)
	require.False(t, stopped(), "resumed after the freeze")
	requireRuns(t, file)
	require.NoError(t, r.Err(), "the same process runs")

	ctx, cancel := context.WithCancel(context.Background())
	f.ctx = ctx
	go func() { done <- f.freeze(r, time.Minute) }()
	require.Eventually(t, stopped, 5*time.Second, 5*time.Millisecond, "stopped by the freeze")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("the freeze outlasted the run's end")
	}
	requireRuns(t, file)
}

// A replica gone before its freeze or its cut from PostgreSQL is no error
// of the fault, which does not wait: the look after the fault counts it as
// exited unasked and starts it again.
func TestFailoverFreezeOrCutOfAnExitedReplica(t *testing.T) {
	dir := t.TempDir()
	for name, fault := range map[string]func(*replicaFaults, *chaos.Replica) error{
		"frozen": func(f *replicaFaults, r *chaos.Replica) error { return f.freeze(r, time.Minute) },
		"cut":    func(f *replicaFaults, r *chaos.Replica) error { return f.cut(r, time.Minute) },
	} {
		r := shReplica(t, name, exitsOnce(dir, name))
		f, said := testFaults(t, r)
		f.proxies = map[*chaos.Replica]*tcpproxy.Proxy{r: tcpproxy.Start(t, echoServer(t))}
		exited(t, r)
		require.Eventually(t, func() bool { return r.Err() != nil }, 5*time.Second, 10*time.Millisecond)
		require.NoError(t, fault(f, r), "%s: no fault to strike, no wait", name)
		var c faultCounts
		require.NoError(t, f.checkExits(&c, 0))
		require.Equal(t, faultCounts{ExitedUnasked: 1}, c, name)
		require.Contains(t, (*said)[0], "replica "+name+" exited unasked (exit status 2)")
		require.NoError(t, r.Err(), "%s: started again", name)
	}
}

// echoServer answers every line with itself until the test ends.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// answers is whether a new connection to addr gets its line back within d.
func answers(addr string, d time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "ping\n"
}

// A cut hangs the replica's own proxy in front of PostgreSQL for its time
// and then forwards again, the replica running on, the same process; the
// run's end during a cut restores the proxy too, so that no replica is
// left cut off. A replica with no proxy is lockbench's error.
func TestFailoverCutRestores(t *testing.T) {
	r := shReplica(t, "cut", loop)
	other := shReplica(t, "other", loop)
	proxy, otherProxy := tcpproxy.Start(t, echoServer(t)), tcpproxy.Start(t, echoServer(t))
	f, _ := testFaults(t, r, other)
	f.proxies = map[*chaos.Replica]*tcpproxy.Proxy{r: proxy, other: otherProxy}
	require.True(t, answers(proxy.Addr(), 5*time.Second), "forwarding before the cut")
	cutOff := func() bool { return !answers(proxy.Addr(), 50*time.Millisecond) }

	done := make(chan error, 1)
	go func() { done <- f.cut(r, 2*time.Second) }()
	require.Eventually(t, cutOff, 5*time.Second, 10*time.Millisecond, "the cut hangs the replica's proxy")
	require.True(t, answers(otherProxy.Addr(), 5*time.Second), "the other replica's proxy forwards")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the cut did not end")
	}
	require.True(t, answers(proxy.Addr(), 5*time.Second), "restored after the cut")
	require.NoError(t, r.Err(), "the same process runs")

	ctx, cancel := context.WithCancel(context.Background())
	f.ctx = ctx
	go func() { done <- f.cut(r, time.Minute) }()
	require.Eventually(t, cutOff, 5*time.Second, 10*time.Millisecond, "the cut hangs the replica's proxy")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("the cut outlasted the run's end")
	}
	require.True(t, answers(proxy.Addr(), 5*time.Second), "restored at the run's end")

	f.proxies = nil
	require.EqualError(t, f.cut(r, time.Minute), "replica cut has no proxy in front of PostgreSQL")
}

// phaseGoal is the goal what of a failover run of one phase of fault:
// its target, and what it measured with whether that met it.
func phaseGoal(t *testing.T, fault, what string, worst float64, unanswered int) (target, measured string) {
	t.Helper()
	f := &FailoverResult{Replicas: 3, Partitions: 16, SessionTimeoutMS: 6000, Commands: 100, Phases: []FailoverPhase{
		{Fault: fault, Times: 3, Commands: 100, Unanswered: unanswered, WorstMS: worst},
	}}
	var r Report
	r.failoverGoals(f)
	for _, g := range r.Goals {
		if g.What == what {
			return g.Target, g.Measured + " " + map[bool]string{true: "yes", false: "NO"}[g.Met != nil && *g.Met]
		}
	}
	t.Fatalf("no goal %q", what)
	return "", ""
}

// phaseRow is the failover table of a run of one phase of fault, struck 3
// times, 100 commands, the worst answered after worst ms.
func phaseRow(fault string, worst float64) string {
	f := &FailoverResult{Replicas: 3, Partitions: 16, SessionTimeoutMS: 6000, Phases: []FailoverPhase{
		{Fault: fault, Times: 3, Commands: 100, WorstMS: worst},
	}}
	var out bytes.Buffer
	f.print(func(format string, args ...any) { fmt.Fprintf(&out, format, args...) })
	return out.String()
}

// The SIGSTOP and PostgreSQL cut phases are rows of the failover table,
// each with its goal on the worst time to answer: the SIGKILL one's for a
// SIGSTOP (session timeout + 2 s: more is a wait on the frozen replica);
// for a cut, the worker's default POSTGRES_UNREACHABLE_TIMEOUT (15 s) +
// 5 s (a build that keeps the cut replica's partitions answers them after
// the whole cut, and misses it). A command unanswered misses either.
func TestFailoverPhaseGoals(t *testing.T) {
	for _, c := range []struct {
		fault, goal, target string
		met, missed         float64 // worst times that meet and miss it
		metSays, missedSays string  // the goal's line for each
		row                 string  // the table's row at missed
	}{
		{"SIGSTOP one of three", "SIGSTOP: worst time to answer", "<= 8,000 ms", 7999, 15200, "7,999 ms yes", "15,200 ms NO",
			"\n  SIGSTOP one of three                  3        100           0      15200        0         0                  0              -               0              0\n"},
		{"PostgreSQL cut from one of three", "PostgreSQL cut from one: worst time to answer", "<= 20,000 ms", 19999, 30100, "19,999 ms yes", "30,100 ms NO",
			"\n  PostgreSQL cut from one of three      3        100           0      30100        0         0                  0              -               0              0\n"},
	} {
		t.Run(c.fault, func(t *testing.T) {
			met := func(worst float64, unanswered int) string {
				target, measured := phaseGoal(t, c.fault, c.goal, worst, unanswered)
				require.Equal(t, c.target, target)
				return measured
			}
			require.Equal(t, c.metSays, met(c.met, 0))
			require.Equal(t, c.missedSays, met(c.missed, 0))
			require.Equal(t, "900 ms NO", met(900, 1), "a command unanswered")
			require.Contains(t, phaseRow(c.fault, c.missed), c.row)
		})
	}
}

// A replica's DATABASE_URL points at its own proxy: through it, it reaches
// the same server as the same user, in the same database, with the same
// parameters (the schema's search_path among them), whichever form the
// connection string has.
func TestFailoverProxiedURL(t *testing.T) {
	schema := testdb.NewSchema(t)
	cfg, err := pgconn.ParseConfig(schema.URL)
	require.NoError(t, err)
	keywordValue := ""
	for _, kv := range [][2]string{{"host", cfg.Host}, {"port", strconv.Itoa(int(cfg.Port))}, {"user", cfg.User},
		{"password", cfg.Password}, {"dbname", cfg.Database}, {"search_path", schema.Name}} {
		keywordValue = connstr.WithParam(keywordValue, kv[0], kv[1])
	}
	for name, dbURL := range map[string]string{"as given": schema.URL, "keyword/value": keywordValue} {
		t.Run(name, func(t *testing.T) {
			proxy, proxiedURL, err := proxied(dbURL)
			require.NoError(t, err)
			defer proxy.Close()
			server, err := connstr.Server(proxiedURL)
			require.NoError(t, err)
			require.Equal(t, proxy.Addr(), server)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, proxiedURL)
			require.NoError(t, err)
			defer conn.Close(ctx)
			var user, db, path string
			require.NoError(t, conn.QueryRow(ctx, "SELECT current_user, current_database(), current_setting('search_path')").Scan(&user, &db, &path))
			require.Equal(t, cfg.User, user)
			require.Equal(t, cfg.Database, db)
			require.Equal(t, schema.Name, path)

			proxy.Cut()
			_, err = pgx.Connect(ctx, proxiedURL)
			require.Error(t, err, "connections go through the proxy")
		})
	}

	// Anything that is not one TCP server is refused, without the password.
	for _, bad := range []string{
		"mysql://u:secret@127.0.0.1:3306/x",
		"postgres://u:secret@a:5432,b:5432/x",
		"postgres://u:secret@/x?host=/var/run/postgresql",
	} {
		_, _, err := proxied(bad)
		require.ErrorContains(t, err, "the failover scenario puts a proxy in front of PostgreSQL", bad)
		require.NotContains(t, err.Error(), "secret", bad)
	}
}
