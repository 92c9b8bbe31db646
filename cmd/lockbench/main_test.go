package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/worker"
)

// TestSmoke runs every scenario in a tiny configuration against an
// in-process lockworker. It checks that each scenario ran and reported;
// it never asserts speed.
func TestSmoke(t *testing.T) {
	cfg, err := parseFlags([]string{"--quick", "--broker-memory", "--sql-stats", "--pg-sample"}, &bytes.Buffer{})
	require.NoError(t, err)
	testdb.Require(t) // no PostgreSQL: fail saying how to provide one
	cfg.DatabaseURL = testdb.URL()
	cfg.Clients, cfg.Warmup, cfg.Duration = 4, 300*time.Millisecond, time.Second
	cfg.Rate, cfg.LatencyDuration = 100, time.Second
	cfg.Waiters, cfg.Leases, cfg.Lease = 3, 20, time.Second
	cfg.CleanupSizes = []int{10}
	cfg.CeilingDuration, cfg.CeilingBigBatch = 500*time.Millisecond, 20
	cfg.Rounds = 2 // peer: the second round runs in the other order

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := run(ctx, cfg, &progress)
	t.Log(progress.String())
	require.NoError(t, err)

	require.NotNil(t, rep.Throughput)
	require.Positive(t, rep.Throughput.Commands)
	require.NotNil(t, rep.ThroughputSDK)
	require.Positive(t, rep.ThroughputSDK.Commands)
	require.NotEmpty(t, rep.Throughput.SQL, "--sql-stats timed no statement")
	require.NotNil(t, rep.Latency)
	require.Equal(t, 30, rep.Latency.WarmupSent, "--warmup at --rate")
	require.Equal(t, int64(rep.Latency.Sent), rep.Latency.Answered, "the warm-up's answers are not counted")
	require.Equal(t, int64(rep.Latency.Sent/2), rep.Latency.Acquire.N)
	require.Zero(t, rep.Latency.Unexpected)
	require.NotNil(t, rep.Contention)
	require.Equal(t, 3, rep.Contention.Granted)
	require.True(t, rep.Contention.Fair, rep.Contention.FirstMismatch)
	require.NotNil(t, rep.Expiry)
	require.Equal(t, 20, rep.Expiry.Expired)
	require.Len(t, rep.Cleanup, 2)
	for _, c := range rep.Cleanup {
		require.Equal(t, 10, c.Cleaned, c.Kind)
		require.Equal(t, 1, c.Commands, "below the bound, one command")
	}
	require.Len(t, rep.Ceiling, 2)
	for _, c := range rep.Ceiling {
		require.Positive(t, c.Commands)
	}
	require.NotNil(t, rep.Resources)
	require.Positive(t, rep.Resources.PeakRSSMiB)
	require.NotNil(t, rep.Peer)
	require.Len(t, rep.Peer.Rounds, 2)
	for _, r := range rep.Peer.Rounds {
		require.Positive(t, r.Lockworker.Commands)
		require.Positive(t, r.Original.Commands)
	}

	// PostgreSQL's CPU is there exactly when its server was found in /proc
	// (the test database may be in a container), and a note says when not.
	require.Equal(t, rep.PostgresCPUMeasured, rep.Throughput.CPU.PostgresCPU != nil)
	require.Equal(t, rep.PostgresCPUMeasured, rep.Throughput.PGCPUPer != nil)
	if !rep.PostgresCPUMeasured {
		require.Contains(t, strings.Join(rep.Notes, "\n"), "PostgreSQL CPU not measured")
	}

	var table bytes.Buffer
	rep.print(&table, cfg)
	for _, s := range []string{"1 throughput", "2 latency", "3 contention", "4 expiry", "5 cleanup", "6 ceiling", "7 resources"} {
		require.Contains(t, table.String(), s)
	}
	b, err := json.Marshal(rep)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "{"))
}

// runFlags runs lockbench with these flags against the test database, for
// at most two minutes, and returns its report.
func runFlags(t *testing.T, args ...string) (*Report, *Config) {
	t.Helper()
	cfg, err := parseFlags(args, &bytes.Buffer{})
	require.NoError(t, err)
	return runConfig(t, cfg), cfg
}

// runConfig runs cfg against the test database for at most two minutes,
// logging its progress, and returns its report.
func runConfig(t *testing.T, cfg *Config) *Report {
	t.Helper()
	testdb.Require(t) // no PostgreSQL: fail saying how to provide one
	cfg.DatabaseURL = testdb.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := run(ctx, cfg, &progress)
	t.Log(progress.String())
	require.NoError(t, err)
	return rep
}

func TestParseScenarios(t *testing.T) {
	s, err := parseScenarios("1,latency, 6")
	require.NoError(t, err)
	require.Equal(t, []string{"throughput", "latency", "ceiling"}, s)
	_, err = parseScenarios("speed")
	require.Error(t, err)
	s, err = parseScenarios("all")
	require.NoError(t, err)
	require.Equal(t, scenarioNames, s)
	require.NotContains(t, s, "soak", "the soak runs only when named")
	s, err = parseScenarios("soak")
	require.NoError(t, err)
	require.Equal(t, []string{"soak"}, s)
	s, err = parseScenarios("failover")
	require.NoError(t, err)
	require.Equal(t, []string{"failover"}, s, "failover runs only when named")
}

// TestSoakSmoke runs the soak for a few seconds in windows of one, with
// the worker's vacuum loop: it reports every window, the ratios and the
// dead rows, and prints its table. It never asserts speed.
func TestSoakSmoke(t *testing.T) {
	rep, cfg := runFlags(t, "--scenario", "soak", "--broker-memory", "--soak-duration", "3s", "--soak-window", "1s",
		"--soak-clients", "4", "--soak-locks", "8", "--warmup", "500ms")
	require.Nil(t, rep.Throughput, "only the soak ran")
	s := rep.Soak
	require.NotNil(t, s)
	require.True(t, s.Vacuum)
	require.Len(t, s.Windows, 3)
	for _, w := range s.Windows {
		require.Positive(t, w.Commands)
		require.Contains(t, w.DeadRows, "locks")
	}
	require.Zero(t, s.Errors)
	require.Positive(t, s.ThroughputRatio)
	require.Positive(t, s.P99Ratio)
	var table bytes.Buffer
	rep.print(&table, cfg)
	require.Contains(t, table.String(), "soak: 4 clients on 8 locks")
	require.Contains(t, table.String(), "throughput last window / first")
}

// TestModesSmoke runs the modes scenario briefly: exclusive, shared and
// semaphore rounds all complete without errors and report a cost ratio.
func TestModesSmoke(t *testing.T) {
	rep, cfg := runFlags(t, "--scenario", "modes", "--broker-memory", "--quick", "--clients", "8", "--duration", "1s", "--warmup", "300ms")
	require.NotNil(t, rep.Modes)
	require.Len(t, rep.Modes.Rounds, 1)
	r := rep.Modes.Rounds[0]
	for _, x := range []ThroughputResult{r.Exclusive, r.Shared, r.Semaphore} {
		require.Positive(t, x.Commands, x.Via)
		require.Zero(t, x.Errors, x.Via)
	}
	var table bytes.Buffer
	rep.print(&table, cfg)
	require.Contains(t, table.String(), "shared / exclusive CPU per command")
}

// TestBuildsSmoke compares the worker with itself for a round: each build
// runs on a target of its own, and the round reports both and the ratios.
// It never asserts speed.
func TestBuildsSmoke(t *testing.T) {
	t.Parallel()
	bins, err := chaos.Build(context.Background(), t.TempDir(), "lockworker")
	require.NoError(t, err)
	rep, cfg := runFlags(t, "--scenario", "builds", "--worker-bin", bins[0], "--baseline-bin", bins[0], "--broker-memory", "--quick",
		"--clients", "4", "--duration", "1s", "--warmup", "300ms")
	require.Nil(t, rep.Throughput, "only the builds ran")
	requireBuildsRound(t, rep, cfg, "candidate / baseline: throughput")
}

// requireBuildsRound checks a builds run of one round: both child
// processes answered every command and were measured, and the table says
// want.
func requireBuildsRound(t *testing.T, rep *Report, cfg *Config, want string) {
	t.Helper()
	require.NotNil(t, rep.Builds)
	require.Len(t, rep.Builds.Rounds, 1)
	r := rep.Builds.Rounds[0]
	for _, x := range []ThroughputResult{r.Baseline, r.Candidate} {
		require.Positive(t, x.Commands)
		require.Zero(t, x.Errors)
		require.NotNil(t, x.CPU.WorkerCPU, "the child's CPU is measured")
		require.Positive(t, *x.CPU.WorkerCPU, "the child's CPU is measured")
	}
	require.Positive(t, r.Ratio)
	require.Positive(t, r.P50Ratio)
	// PostgreSQL's CPU counts the backends that exit within the window
	// (other tests' too): it cannot pull a build's figure below zero.
	// Without it (the test database in a container) there is no ratio.
	if rep.PostgresCPUMeasured {
		require.Positive(t, r.CPURatio)
	} else {
		require.Zero(t, r.CPURatio)
	}
	var table bytes.Buffer
	rep.print(&table, cfg)
	require.Contains(t, table.String(), want)
}

func TestBuildsNeedsTwoBinaries(t *testing.T) {
	_, err := parseFlags([]string{"--scenario", "builds", "--worker-bin", "/bin/true"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "--baseline-bin")
}

// TestSoakNeedsALockPerClient: fewer soak locks than clients would make
// clients refuse each other, which the soak would count as the worker's
// errors; parseFlags refuses it, and takes as many locks as clients.
func TestSoakNeedsALockPerClient(t *testing.T) {
	_, err := parseFlags([]string{"--scenario", "soak", "--soak-clients", "64", "--soak-locks", "32"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "--soak-locks (32) must be at least --soak-clients (64)")
	cfg, err := parseFlags([]string{"--scenario", "soak", "--soak-clients", "8", "--soak-locks", "8"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 8, cfg.SoakLocks)
}

// TestBurstSmoke sends a small burst: every command is answered as it
// should be. It never asserts speed.
func TestBurstSmoke(t *testing.T) {
	rep, cfg := runFlags(t, "--scenario", "burst", "--broker-memory", "--quick", "--burst-locks", "25", "--burst-extends", "2", "--burst-owners", "2")
	b := rep.Burst
	require.NotNil(t, b)
	require.Equal(t, 200, b.Commands)
	require.Equal(t, int64(200), b.Answered)
	require.Zero(t, b.Unexpected)
	require.Positive(t, b.PerSecond)
	var table bytes.Buffer
	rep.print(&table, cfg)
	require.Contains(t, table.String(), "burst: 200 commands")
}

// TestFailedRunKeepsJSONOut: a run that fails before any scenario has a
// result (here a --failover-log that cannot be created) says why in its
// report and leaves the --json-out of an earlier run as it was; a run that
// fails after one has writes the file, with the error.
func TestFailedRunKeepsJSONOut(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lockbench.json")
	require.NoError(t, os.WriteFile(out, []byte("earlier run"), 0o644))
	cfg, err := parseFlags([]string{"--scenario", "failover", "--failover-log", filepath.Join(dir, "no", "such", "dir.log"), "--json-out", out}, &bytes.Buffer{})
	require.NoError(t, err)
	rep, err := run(context.Background(), cfg, &bytes.Buffer{})
	require.Error(t, err)
	require.Equal(t, err.Error(), rep.Error)
	require.False(t, rep.hasResults())

	var stdout, stderr bytes.Buffer
	writeReport(rep, cfg, &stdout, &stderr)
	require.Contains(t, stdout.String(), "RUN FAILED: "+err.Error())
	require.Contains(t, stderr.String(), "not written")
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "earlier run", string(b))

	cfg.JSON = true
	stdout.Reset()
	writeReport(rep, cfg, &stdout, &stderr)
	var got map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &got))
	require.Equal(t, rep.Error, got["error"], "stdout's JSON has the error")

	rep.Burst = &BurstResult{Commands: 10} // a scenario completed before the error
	writeReport(rep, cfg, &stdout, &stderr)
	b, err = os.ReadFile(out)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, rep.Error, got["error"])
}

// TestHasResults: every scenario's result in the report counts, so that a
// result added later is not forgotten by hasResults.
func TestHasResults(t *testing.T) {
	notResults := []string{"Brokers", "Config", "Goals", "Notes"}
	v := reflect.ValueOf(Report{})
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() || slices.Contains(notResults, f.Name) || (f.Type.Kind() != reflect.Pointer && f.Type.Kind() != reflect.Slice) {
			continue
		}
		r := &Report{}
		fv := reflect.ValueOf(r).Elem().Field(i)
		if f.Type.Kind() == reflect.Pointer {
			fv.Set(reflect.New(f.Type.Elem()))
		} else {
			fv.Set(reflect.MakeSlice(f.Type, 1, 1))
		}
		require.True(t, r.hasResults(), f.Name)
	}
	require.False(t, (&Report{}).hasResults())
}

// The failover's freezes (3 of 15 s by default) and PostgreSQL cuts (3 of
// 30 s): one each under --quick (still 15 s and 30 s, longer than the
// session timeout and the worker's POSTGRES_UNREACHABLE_TIMEOUT), set by
// their flags; a negative count or a fault of no time is refused.
func TestParseFlagsFailoverFreezesAndCuts(t *testing.T) {
	for _, fault := range []struct {
		count, length string
		defaultFor    time.Duration
		get           func(FailoverConfig) (int, time.Duration)
		set           FailoverConfig
		json          string
	}{
		{"failover-freezes", "failover-freeze-for", 15 * time.Second,
			func(f FailoverConfig) (int, time.Duration) { return f.Freezes, f.FreezeFor },
			FailoverConfig{Freezes: 3, FreezeFor: 15 * time.Second}, `"freezes":3,"freeze_for_ns":15000000000`},
		{"failover-cuts", "failover-cut-for", 30 * time.Second,
			func(f FailoverConfig) (int, time.Duration) { return f.Cuts, f.CutFor },
			FailoverConfig{Cuts: 3, CutFor: 30 * time.Second}, `"cuts":3,"cut_for_ns":30000000000`},
	} {
		got := func(args ...string) (int, time.Duration) {
			t.Helper()
			cfg, err := parseFlags(args, &bytes.Buffer{})
			require.NoError(t, err)
			return fault.get(cfg.Failover)
		}
		n, d := got()
		require.Equal(t, 3, n, fault.count)
		require.Equal(t, fault.defaultFor, d, fault.length)
		n, d = got("--quick")
		require.Equal(t, 1, n, fault.count)
		require.Equal(t, fault.defaultFor, d, fault.length)
		n, d = got("--quick", "--"+fault.count, "0", "--"+fault.length, "8s")
		require.Equal(t, 0, n, "0 skips the phase")
		require.Equal(t, 8*time.Second, d)
		_, err := parseFlags([]string{"--" + fault.count, "-1"}, &bytes.Buffer{})
		require.EqualError(t, err, "--"+fault.count+" must be 0 or more")
		for _, d := range []string{"0s", "-2s"} {
			_, err := parseFlags([]string{"--" + fault.length, d}, &bytes.Buffer{})
			require.EqualError(t, err, "--"+fault.length+" must be positive", d)
		}

		b, err := json.Marshal(fault.set)
		require.NoError(t, err)
		require.Contains(t, string(b), fault.json)
	}
}

// TestParseFlagsFailoverCounts: the SIGKILLs, SIGTERMs and rolling
// restarts are DefaultConfig's, or --quick's, unless given; a negative
// count is refused, not taken for "not given".
func TestParseFlagsFailoverCounts(t *testing.T) {
	counts := func(args ...string) []int {
		t.Helper()
		cfg, err := parseFlags(args, &bytes.Buffer{})
		require.NoError(t, err)
		return []int{cfg.Failover.Kills, cfg.Failover.Terms, cfg.Failover.Rolls}
	}
	require.Equal(t, []int{10, 10, 3}, counts())
	require.Equal(t, []int{2, 2, 1}, counts("--quick"))
	require.Equal(t, []int{5, 0, 1}, counts("--quick", "--failover-kills", "5", "--failover-terms", "0"))
	require.Equal(t, []int{10, 10, 0}, counts("--failover-rolls", "0"))
	for _, name := range []string{"failover-kills", "failover-terms", "failover-rolls"} {
		_, err := parseFlags([]string{"--" + name, "-1"}, &bytes.Buffer{})
		require.EqualError(t, err, "--"+name+" must be 0 or more")
	}
}

// TestParseFlagsNumbersOutOfRange: a number given is taken as given or
// refused, never replaced by a default nor kept to fail far from its
// flag; 0 is taken where it means something.
func TestParseFlagsNumbersOutOfRange(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--clients", "-5"}, "--clients must be positive"},
		{[]string{"--clients", "0"}, "--clients must be positive"},
		{[]string{"--duration", "-1s"}, "--duration must be positive"},
		{[]string{"--warmup", "-1s"}, "--warmup must be 0 or more"},
		{[]string{"--rate", "-100"}, "--rate must be positive"},
		{[]string{"--rounds", "-2"}, "--rounds must be positive"},
		{[]string{"--pg-max-conns", "0"}, "--pg-max-conns must be positive"},
		{[]string{"--pg-max-conns", "-3"}, "--pg-max-conns must be positive"},
		{[]string{"--burst-owners", "0"}, "--burst-owners must be positive"},
		{[]string{"--burst-extends", "-1"}, "--burst-extends must be 0 or more"},
		{[]string{"--cleanup-ended-max", "-1"}, "--cleanup-ended-max must be 0 or more"},
		{[]string{"--soak-scrape", "-1s"}, "--soak-scrape must be 0 or more"},
		{[]string{"--ceiling-batch", "0"}, "--ceiling-batch must be positive"},
		{[]string{"--soak-clients", "0"}, "--soak-clients must be positive"},
		{[]string{"--failover-heartbeat", "0s"}, "--failover-heartbeat must be positive"},
		{[]string{"--quick", "--clients", "-1", "--appliers", "-1"}, "--appliers must be 0 or more"}, // the first in name order
		{[]string{"--rate", "1", "--latency-duration", "1s"}, "--rate 1 for --latency-duration 1s sends 0 commands to measure: at least an acquire and its release (2) are needed"},
		{[]string{"--quick", "--latency-duration", "5ms"}, "--rate 200 for --latency-duration 5ms sends 0 commands to measure: at least an acquire and its release (2) are needed"},
		{[]string{"--soak-duration", "1m", "--soak-window", "2m"}, "--soak-window must be at most --soak-duration"},
	} {
		_, err := parseFlags(c.args, &bytes.Buffer{})
		require.EqualError(t, err, c.want, c.args)
	}
	cfg, err := parseFlags([]string{"--quick", "--warmup", "0", "--burst-extends", "0", "--cleanup-ended-max", "0", "--soak-scrape", "0",
		"--clients", "5", "--rate", "2", "--latency-duration", "1s"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []any{time.Duration(0), 0, 0, time.Duration(0), 5, 2, time.Second},
		[]any{cfg.Warmup, cfg.BurstExtends, cfg.CleanupEndedMax, cfg.SoakScrape, cfg.Clients, cfg.Rate, cfg.LatencyDuration})
}

// TestLatencyWindowNothingSent: the latency window's CPU is read from its
// start even when it sends nothing (parseFlags refuses that, a Config
// need not), not from no reading, a window since the epoch.
func TestLatencyWindowNothingSent(t *testing.T) {
	cfg, err := parseFlags([]string{"--scenario", "latency", "--broker-memory", "--warmup", "0"}, &bytes.Buffer{})
	require.NoError(t, err)
	cfg.LatencyDuration = time.Millisecond // one command at 1,000/s, no pair
	rep := runConfig(t, cfg)
	require.NotNil(t, rep.Latency)
	require.Zero(t, rep.Latency.Sent)
	require.Less(t, rep.Latency.CPU.Seconds, 60.0, "the window is the run's, not since the epoch")
}

// TestAppliersReachTheCeilingInProcessOnly: --appliers sets the in-process
// worker's appliers and the ceiling's transactions at once; a child worker
// has no such setting, so the ceiling keeps the default it runs with.
func TestAppliersReachTheCeilingInProcessOnly(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  int
	}{
		{[]string{"--appliers", "4"}, 4},
		{[]string{"--appliers", "4", "--worker-bin", "/bin/lockworker"}, worker.DefaultAppliers},
		{[]string{"--appliers", "4", "--brokers", "127.0.0.1:9092"}, worker.DefaultAppliers},
	} {
		cfg, err := parseFlags(c.flags, &bytes.Buffer{})
		require.NoError(t, err, c.flags)
		require.Equal(t, c.want, cfg.CeilingAppliers, c.flags)
	}
}

// TestInProcessOptionsRefusedElsewhere: --cpuprofile, --memprofile and
// --sql-stats look inside the in-process worker, --max-poll-records and
// --relay-concurrent-topics set it (lockworker has no setting of either),
// --broker-memory picks the broker lockbench runs itself; with the worker
// or the broker another process they are refused when given, even at
// their defaults, and the refusal is written out (main only exits).
func TestInProcessOptionsRefusedElsewhere(t *testing.T) {
	workerElsewhere := [][]string{{"--worker-bin", "/bin/lockworker"}, {"--worker-bin", "floor:kafka"}, {"--brokers", "127.0.0.1:9092"}}
	brokerElsewhere := [][]string{{"--broker-bin", "/bin/devkafka"}, {"--brokers", "127.0.0.1:9092"}}
	for _, c := range []struct {
		flag      []string
		elsewhere [][]string
		refusal   string
	}{
		{[]string{"--cpuprofile", "cpu.out"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--memprofile", "mem.out"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--sql-stats"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--max-poll-records", "500"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--max-poll-records", "0"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--relay-concurrent-topics=false"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--relay-concurrent-topics"}, workerElsewhere, "for the in-process worker only; with --worker-bin or --brokers the worker is another process"},
		{[]string{"--broker-memory"}, brokerElsewhere, "for a broker in lockbench's process only; with --broker-bin or --brokers the broker is another process"},
	} {
		_, err := parseFlags(c.flag, &bytes.Buffer{})
		require.NoError(t, err, "in process: %v", c.flag)
		name, _, _ := strings.Cut(c.flag[0], "=")
		for _, where := range c.elsewhere {
			var stderr bytes.Buffer
			_, err := parseFlags(append(slices.Clone(c.flag), where...), &stderr)
			require.ErrorContains(t, err, name+": "+c.refusal, "%v %v", c.flag, where)
			require.Equal(t, "lockbench: "+err.Error()+"\n", stderr.String())
		}
	}
	// A broker of lockbench's own with a child worker: --broker-memory holds.
	cfg, err := parseFlags([]string{"--broker-memory", "--worker-bin", "/bin/lockworker"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, cfg.BrokerMemory)
}

// TestHelpSaysOneDefault: no flag's help names two defaults, the text's and
// the flag package's (the failover counts' -1, "not given", was printed
// as their default).
func TestHelpSaysOneDefault(t *testing.T) {
	var help bytes.Buffer
	_, err := parseFlags([]string{"--help"}, &help)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, help.String(), "-failover-kills")
	for _, usage := range strings.Split(help.String(), "\n  -")[1:] {
		require.LessOrEqual(t, strings.Count(usage, "(default "), 1, usage)
		require.NotContains(t, usage, "(default -1)", usage)
	}
}

// TestSecondSignalEndsTheProcess: the first SIGINT cancels the run, which
// then unwinds (here it would sleep a minute); a SIGTERM then is ignored,
// and a second SIGINT ends the process at once. The test binary is the process (TestMain, signalsChild).
func TestSecondSignalEndsTheProcess(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), signalsChild+"=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(out)
	next := func() string {
		require.True(t, lines.Scan(), "the child's output ended")
		return lines.Text()
	}
	require.Equal(t, "ready", next())
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	require.Equal(t, "cancelled", next())
	// A second SIGTERM (a pair from make and a process group's kill) is
	// ignored: the child is still there for the SIGINT below.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err = cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the child ended by itself, after its unwinding")
	require.Equal(t, syscall.SIGINT, exit.Sys().(syscall.WaitStatus).Signal())
}
