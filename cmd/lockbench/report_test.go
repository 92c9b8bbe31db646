package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestModesGoalJudgedApart: the shared / exclusive CPU ratio is judged only
// when the worker and the broker are measured as processes of their own;
// otherwise it is shown, and a note says why it is not judged.
func TestModesGoalJudgedApart(t *testing.T) {
	modes := &ModesResult{Clients: 8, Rounds: []ModesRound{{SharedCost: 1.5}, {SharedCost: 2.5}}}
	apart := Config{WorkerBin: "lockworker", BrokerBin: "devkafka"}
	for _, c := range []struct {
		name   string
		cfg    Config
		pg     bool
		judged bool
	}{
		{"in process", Config{}, true, false},
		{"child worker, broker in lockbench", Config{WorkerBin: "lockworker"}, true, false},
		{"apart", apart, true, true},
		{"apart, PostgreSQL not measured", apart, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &Report{Config: &c.cfg, Modes: modes, PostgresCPUMeasured: c.pg}
			r.modesGoals()
			require.Len(t, r.Goals, 1)
			g := r.Goals[0]
			require.Equal(t, "2.50x", g.Measured)
			if c.judged {
				require.NotNil(t, g.Met)
				require.False(t, *g.Met)
				require.Empty(t, r.Notes)
				return
			}
			require.Nil(t, g.Met)
			require.Len(t, r.Notes, 1)
			require.Contains(t, r.Notes[0], "not judged")
		})
	}
}

// TestGoalsShowSampleCount: a percentile in the goals table says how many
// samples it is of.
func TestGoalsShowSampleCount(t *testing.T) {
	cfg := DefaultConfig()
	r := newReport(&cfg)
	r.Latency = &LatencyResult{Rate: 100, Sent: 1000, Answered: 1000,
		Acquire: dist{N: 500, P50: 1.2, P99: 4}, Release: dist{N: 499, P50: 1.1, P99: 3}}
	r.Contention = &ContentionResult{Waiters: 3, Granted: 3, Fair: true, InOrder: 3, Positions: true, HandOff: dist{N: 3, P50: 2}}
	r.finish(&cfg)
	var table bytes.Buffer
	r.print(&table, &cfg)
	// A whole figure prints without decimals, as a count does (3 of 3).
	for _, want := range []string{"1.20 ms n=500", "4 ms n=500", "3 ms n=499", "2 ms n=3", " 3 of 3 "} {
		require.Contains(t, table.String(), want)
	}
	for _, line := range strings.Split(table.String(), "\n") {
		if strings.Contains(line, "grants in send order") {
			require.NotContains(t, line, "n=", "a count, not a percentile")
		}
	}
}

// TestFmtNum: counts and other whole figures print without decimals, the
// one format of every integer goal ("3 of 3", "0 of 7,700").
func TestFmtNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 3: "3", 7700: "7,700", 1234567: "1,234,567", -1234: "-1,234", -5: "-5",
		0.2: "0.20", 4.5: "4.50", 12.34: "12.3", 123.4: "123", 1234.6: "1,235"} {
		require.Equal(t, want, fmtNum(v), "%v", v)
	}
}

// cpuWindow is a throughput window of n commands with these CPU seconds
// (nil: not measured).
func cpuWindow(n int64, worker, broker, pg *float64) ThroughputResult {
	return ThroughputResult{Commands: n, PerSecond: float64(n), CPU: cpuUse{Seconds: 1, WorkerCPU: worker, BrokerCPU: broker, PostgresCPU: pg}}
}

func secs(v float64) *float64 { return &v }

// TestCPUGoalsNeedPostgres: without PostgreSQL's CPU (its server not found
// in /proc), the goals on CPU that include it are not judged on the worker
// and the broker alone: the peer's CPU per command and the modes' ratio
// read "-", a note says why, the figures print "-" and the JSON leaves
// PostgreSQL's out.
func TestCPUGoalsNeedPostgres(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkerBin, cfg.BrokerBin, cfg.Clients = "lockworker", "devkafka", 8
	// 1,000 commands on 0.1 s of worker and broker CPU: 0.1 ms a command,
	// under the peer's 0.3 ms, were PostgreSQL's not missing.
	noPG := cpuWindow(1000, secs(0.05), secs(0.05), nil)
	build := func(pg bool, win ThroughputResult) *Report {
		r := newReport(&cfg)
		r.postgresFound(pg)
		r.Peer = &PeerResult{Target: "lockworker", Clients: 8, Rounds: []PeerRound{{Lockworker: win, Original: win, Ratio: 1, P50Ratio: 1}}}
		var m ModesRound
		m.Exclusive, m.Shared, m.Semaphore = win, win, win
		m.SharedCost = cpuRatio(m.Shared, m.Exclusive)
		r.Modes = &ModesResult{Clients: 8, Limit: modesLimit, Rounds: []ModesRound{m}}
		r.Throughput = &win
		r.finish(&cfg)
		return r
	}
	cpuGoals := func(r *Report) []Goal {
		var out []Goal
		for _, g := range r.Goals {
			if strings.Contains(g.What, "CPU") {
				out = append(out, g)
			}
		}
		require.Len(t, out, 2, "peer's and modes'")
		return out
	}

	r := build(false, noPG)
	require.False(t, r.PostgresCPUMeasured)
	for _, g := range cpuGoals(r) {
		require.Equal(t, "-", g.Measured, g.What)
		require.Nil(t, g.Met, g.What)
	}
	notes := strings.Join(r.Notes, "\n")
	require.Contains(t, notes, "peer: the CPU per command is not judged: PostgreSQL's CPU was not measured")
	require.Contains(t, notes, "modes: the CPU ratio is not judged: PostgreSQL's CPU was not measured")
	var table bytes.Buffer
	r.print(&table, &cfg)
	require.Contains(t, table.String(), "PostgreSQL -;")
	require.Contains(t, table.String(), "CPU - ms/cmd")
	require.Contains(t, table.String(), "shared / exclusive CPU per command: -")
	js, err := json.Marshal(r)
	require.NoError(t, err)
	require.NotContains(t, string(js), "postgres_cpu_seconds")
	require.Contains(t, string(js), `"postgres_cpu_measured":false`)

	// Measured, the same run is judged: 0.1 ms + PostgreSQL's 0.1 ms.
	r = build(true, cpuWindow(1000, secs(0.05), secs(0.05), secs(0.1)))
	require.True(t, r.PostgresCPUMeasured)
	for _, g := range cpuGoals(r) {
		require.NotNil(t, g.Met, g.What)
		require.True(t, *g.Met, g.What)
	}
	require.Equal(t, "0.20 ms", cpuGoals(r)[0].Measured)
	require.NotContains(t, strings.Join(r.Notes, "\n"), "not judged")
}

// TestPostgresFoundEveryTarget: PostgreSQL's CPU counts as measured only
// if every target's server was found (builds connects one per run).
func TestPostgresFoundEveryTarget(t *testing.T) {
	for _, c := range []struct {
		found []bool
		want  bool
	}{
		{nil, false},
		{[]bool{true}, true},
		{[]bool{false}, false},
		{[]bool{true, true, true}, true},
		{[]bool{true, false, true}, false},
		{[]bool{false, true}, false},
	} {
		r := &Report{}
		for _, f := range c.found {
			r.postgresFound(f)
		}
		require.Equal(t, c.want, r.PostgresCPUMeasured, "%v", c.found)
	}
}

// TestPrintCPUBrokerLost: a broker process whose reading failed prints
// "-", as every other figure not measured; without a broker process there
// is no broker figure at all.
func TestPrintCPUBrokerLost(t *testing.T) {
	for _, c := range []struct {
		name string
		cpu  cpuUse
		want string
	}{
		{"measured", cpuUse{WorkerCPU: secs(1), BrokerCPU: secs(1.5)}, "worker 1.0 s, broker process 1.5 s, lockbench process -, PostgreSQL -;"},
		{"reading failed", cpuUse{WorkerCPU: secs(1), brokerLost: true}, "worker 1.0 s, broker process -, lockbench process -, PostgreSQL -;"},
		{"no broker process", cpuUse{WorkerCPU: secs(1)}, "worker 1.0 s, lockbench process -, PostgreSQL -;"},
	} {
		var b bytes.Buffer
		printCPU(&b, c.cpu)
		require.Contains(t, b.String(), c.want, c.name)
	}
}

// TestCPUGoalsReadingFailed: with every process measured and PostgreSQL
// found, a reading that failed in a window leaves the peer's and the
// modes' CPU goals "-", and a note says which reading, in which round.
func TestCPUGoalsReadingFailed(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkerBin, cfg.BrokerBin, cfg.Clients = "lockworker", "devkafka", 8
	ok := cpuWindow(1000, secs(0.05), secs(0.05), secs(0.1))
	ok.Via = "exclusive"
	brokerLost := cpuWindow(1000, secs(0.05), nil, secs(0.1))
	brokerLost.CPU.brokerLost = true
	for _, c := range []struct {
		name string
		win  ThroughputResult
		want string
	}{
		{"PostgreSQL's reading failed", cpuWindow(1000, secs(0.05), secs(0.05), nil), "reading PostgreSQL's CPU failed at the start or the end of the window"},
		{"the broker's reading failed", brokerLost, "reading the broker process's CPU failed"},
		{"no command", cpuWindow(0, secs(0.05), secs(0.05), secs(0.1)), "no command completed in the window"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newReport(&cfg)
			r.postgresFound(true)
			r.Peer = &PeerResult{Target: "lockworker", Clients: 8, Rounds: []PeerRound{
				{Lockworker: ok, Original: ok, Ratio: 1, P50Ratio: 1},
				{Lockworker: c.win, Original: ok, Ratio: 1, P50Ratio: 1},
			}}
			shared := c.win
			shared.Via = "shared"
			r.Modes = &ModesResult{Clients: 8, Limit: modesLimit, Rounds: []ModesRound{{Exclusive: ok, Shared: shared, Semaphore: ok}}}
			r.finish(&cfg)
			for _, g := range r.Goals {
				if strings.Contains(g.What, "CPU") {
					require.Equal(t, "-", g.Measured, g.What)
					require.Nil(t, g.Met, g.What)
				}
			}
			notes := strings.Join(r.Notes, "\n")
			require.Contains(t, notes, "peer: the CPU per command is not judged: round 2: "+c.want)
			require.Contains(t, notes, "modes: the CPU ratio is not judged: round 1, shared: "+c.want)
		})
	}
}

// TestCleanupGoalsNeedEverySeededLockCleaned: a cleanup answered fast with
// fewer locks cleaned than seeded misses its goal, and the goal says how
// many; a case measured only as the direct transaction has no goal.
func TestCleanupGoalsNeedEverySeededLockCleaned(t *testing.T) {
	cfg := DefaultConfig()
	judge := func(cases ...CleanupCase) map[string]Goal {
		r := newReport(&cfg)
		r.Cleanup = cases
		r.finish(&cfg)
		out := map[string]Goal{}
		for _, g := range r.Goals {
			if g.Scenario == "5 cleanup" {
				require.NotNil(t, g.Met, g.What)
				out[g.What] = g
			}
		}
		return out
	}
	const timed = "clean 100 expired locks (worker poll->commit)"
	ended := "100 locks, " + kindEnded + ": all cleaned"
	goals := judge(CleanupCase{Kind: kindIdle, Locks: 100, EndToEndMS: 5, WorkerMS: 1, Cleaned: 0},
		CleanupCase{Kind: kindEnded, Locks: 100, EndToEndMS: 5, WorkerMS: 1, Cleaned: 99},
		CleanupCase{Kind: kindIdle, Locks: 1000, DirectMS: 3})
	require.Len(t, goals, 2)
	require.False(t, *goals[timed].Met)
	require.Equal(t, "1 ms, cleaned 0 of 100", goals[timed].Measured)
	require.False(t, *goals[ended].Met)
	require.Equal(t, "99 of 100", goals[ended].Measured)

	goals = judge(CleanupCase{Kind: kindIdle, Locks: 100, EndToEndMS: 5, WorkerMS: 1, Cleaned: 100},
		CleanupCase{Kind: kindEnded, Locks: 100, EndToEndMS: 5, WorkerMS: 1, Cleaned: 100})
	require.True(t, *goals[timed].Met)
	require.Equal(t, "1 ms", goals[timed].Measured)
	require.True(t, *goals[ended].Met)
}

// TestLatencyGoalsNeedEveryAnswer: scenario 2's goals and the peer's
// light-load goals are missed, however fast the answers that came as
// asked, when a command went unanswered or was answered otherwise (a
// refusal), and the figure says how many.
func TestLatencyGoalsNeedEveryAnswer(t *testing.T) {
	cfg := DefaultConfig()
	fast := dist{N: 500, P50: 0.5, P99: 1}
	for _, c := range []struct {
		name                string
		missing, unexpected int64
		acquires            dist
		met                 bool
		suffix              string
	}{
		{"whole", 0, 0, fast, true, ""},
		{"a command missing", 1, 0, fast, false, ", 1 missing, 0 unexpected"},
		{"a refusal", 0, 1, fast, false, ", 0 missing, 1 unexpected"},
		{"every acquire refused", 0, 500, dist{}, false, ", 0 missing, 500 unexpected"},
	} {
		// Scenario 2's goals are judged at 1,000/s, the peer's light-load
		// ones at 100/s.
		for _, at := range []struct{ rate, judged int }{{100, 2}, {1000, 4}} {
			rate := at.rate
			t.Run(fmt.Sprintf("%s at %d/s", c.name, rate), func(t *testing.T) {
				r := newReport(&cfg)
				r.Latency = &LatencyResult{Rate: rate, Sent: 1000, Answered: 1000 - c.missing, Missing: c.missing, Unexpected: c.unexpected,
					Acquire: c.acquires, Release: fast}
				r.Peer = &PeerResult{Target: "lockworker", Clients: 8, Rounds: []PeerRound{{Ratio: 1, P50Ratio: 1}}}
				r.finish(&cfg)
				n := 0
				for _, g := range r.Goals {
					if g.Scenario != "2 latency" && !strings.HasPrefix(g.What, "light load") || g.Met == nil {
						continue
					}
					n++
					require.Equal(t, c.met, *g.Met, g.What)
					require.True(t, strings.HasSuffix(g.Measured, " ms"+c.suffix), "%s: %s", g.What, g.Measured)
				}
				require.Equal(t, at.judged, n)
			})
		}
	}
}

// TestClosedLoopGoalsMissWithErrors: the goals on closed loops (the soak's,
// the peer's, the ceiling's fraction, the modes') are missed when commands
// failed in their windows, however their ratios look, and say how many.
func TestClosedLoopGoalsMissWithErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkerBin, cfg.BrokerBin, cfg.Clients = "lockworker", "devkafka", 8
	win := cpuWindow(1000, secs(0.05), secs(0.05), secs(0.1))
	build := func(errs int64) *Report {
		r := newReport(&cfg)
		r.postgresFound(true)
		failed := win
		failed.Errors = errs
		r.Throughput = &failed
		r.Ceiling = []CeilingResult{{Batch: cfg.sameBatching(), PerSecond: 1000}}
		r.Soak = &SoakResult{Errors: errs, Windows: []SoakWindow{{PerSecond: 1000}}, ThroughputRatio: 1, P99Ratio: 1}
		r.Peer = &PeerResult{Target: "lockworker", Clients: 8, Rounds: []PeerRound{{Lockworker: failed, Original: win, Ratio: 3, P50Ratio: 1}}}
		m := ModesRound{Exclusive: win, Shared: failed, Semaphore: win, SharedCost: 1}
		r.Modes = &ModesResult{Clients: 8, Limit: modesLimit, Rounds: []ModesRound{m}}
		r.finish(&cfg)
		return r
	}
	judged := func(r *Report) []Goal {
		var out []Goal
		for _, g := range r.Goals {
			if g.Scenario == "soak" || g.Scenario == "peer" || g.Scenario == "6 ceiling" || g.Scenario == "modes" {
				out = append(out, g)
			}
		}
		require.Len(t, out, 7, "ceiling 1, soak 2, peer 3, modes 1")
		return out
	}
	for _, g := range judged(build(0)) {
		require.True(t, *g.Met, g.What)
		require.NotContains(t, g.Measured, "errors", g.What)
	}
	for _, g := range judged(build(3)) {
		require.False(t, *g.Met, g.What)
		require.True(t, strings.HasSuffix(g.Measured, ", 3 errors"), "%s: %s", g.What, g.Measured)
	}
}

// TestGoalsMissedWhenNothingWasMeasured: a failure that left no figure
// (no lease expired, every command failed, a last window that completed
// nothing) misses its goal, and the figure says why; it does not leave the
// goal without a verdict, or out of the table.
func TestGoalsMissedWhenNothingWasMeasured(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkerBin, cfg.BrokerBin, cfg.Clients = "lockworker", "devkafka", 8
	win := cpuWindow(1000, secs(0.05), secs(0.05), secs(0.1))
	nothing := cpuWindow(0, secs(0.05), secs(0.05), secs(0.1))
	nothing.Errors = 8
	for _, c := range []struct {
		name, scenario, what string
		set                  func(r *Report)
		measured             string
	}{
		// The worker's expiry scheduler ended no lease: the scenario
		// still returns, after Lease + 60 s.
		{"no lease expired", "4 expiry", "expires_at", func(r *Report) {
			r.Expiry = &ExpiryResult{Leases: 10000, LeaseSeconds: 1, Granted: 10000}
		}, "-, 0 of 10,000 expired"},
		{"some leases expired", "4 expiry", "expires_at", func(r *Report) {
			r.Expiry = &ExpiryResult{Leases: 100, LeaseSeconds: 1, Granted: 100, Expired: 99, OnTopic: dist{N: 99, P99: 20}}
		}, "20 ms, 99 of 100 expired"},
		// The wear the soak is there to catch: its last window completed
		// nothing, its commands timed out.
		{"soak's last window stalled", "soak", "throughput", func(r *Report) {
			r.Soak = &SoakResult{Errors: 32, Windows: []SoakWindow{{PerSecond: 1000}, {PerSecond: 0}}, P99Ratio: 100}
		}, "0, 32 errors"},
		{"soak's last window stalled, no error yet", "soak", "throughput", func(r *Report) {
			r.Soak = &SoakResult{Windows: []SoakWindow{{PerSecond: 1000}, {PerSecond: 0}}, P99Ratio: 100}
		}, "0"},
		// No shared command completed: no CPU ratio.
		{"every shared command failed", "modes", "CPU per shared", func(r *Report) {
			r.Modes = &ModesResult{Clients: 8, Limit: modesLimit, Rounds: []ModesRound{{Exclusive: win, Shared: nothing, Semaphore: win}}}
		}, "-, 8 errors"},
		// Every cycle of scenario 1 timed out: a fraction of 0.
		{"scenario 1 completed nothing", "6 ceiling", "pipeline", func(r *Report) {
			r.Throughput = &ThroughputResult{Via: "raw records", Clients: 8, Seconds: 15, Errors: 8, Unanswered: 8}
			r.Ceiling = []CeilingResult{{Batch: cfg.sameBatching(), PerSecond: 9000}}
		}, "0, 8 errors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newReport(&cfg)
			r.postgresFound(true)
			c.set(r)
			r.finish(&cfg)
			i := slices.IndexFunc(r.Goals, func(g Goal) bool { return g.Scenario == c.scenario && strings.HasPrefix(g.What, c.what) })
			require.GreaterOrEqual(t, i, 0, "no goal %s %q in %+v", c.scenario, c.what, r.Goals)
			g := r.Goals[i]
			require.Equal(t, c.measured, g.Measured)
			require.NotNil(t, g.Met, "no verdict")
			require.False(t, *g.Met)
			require.NotContains(t, strings.Join(r.Notes, "\n"), "not judged")
		})
	}
}

// TestGoalsUnjudgedOnPurposeStayUnjudged: a goal not for this run (the CPU
// goals where the run does not count every process, scenario 2's at
// another rate) has no verdict, failed commands or not.
func TestGoalsUnjudgedOnPurposeStayUnjudged(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients = 8 // in process: the CPU goals are not judged
	failed := cpuWindow(0, secs(0.05), nil, secs(0.1))
	failed.Errors = 8
	r := newReport(&cfg)
	r.postgresFound(true)
	r.Peer = &PeerResult{Target: "lockworker", Clients: 8, Rounds: []PeerRound{{Lockworker: failed, Original: failed}}}
	r.Modes = &ModesResult{Clients: 8, Limit: modesLimit, Rounds: []ModesRound{{Exclusive: failed, Shared: failed, Semaphore: failed}}}
	r.Latency = &LatencyResult{Rate: 5000, Sent: 1000, Answered: 999, Missing: 1, Acquire: dist{N: 500, P50: 1, P99: 2}, Release: dist{N: 499, P50: 1, P99: 2}}
	r.finish(&cfg)
	n := 0
	for _, g := range r.Goals {
		if strings.Contains(g.What, "CPU") || g.Scenario == "2 latency" {
			n++
			require.Nil(t, g.Met, "%s: %s", g.What, g.Measured)
		}
	}
	require.Equal(t, 6, n, "peer's and modes' CPU, scenario 2's four")
}

// TestCeilingFractionOnlyAgainstSameBatching: --ceiling-batch replaces the
// ceiling's run with scenario 1's batching by one labelled with its batch,
// against which scenario 1's fraction is not judged (a note says so); the
// large batches run unless that is the same batch.
func TestCeilingFractionOnlyAgainstSameBatching(t *testing.T) {
	cfg := DefaultConfig()
	same := cfg.sameBatching()
	require.Equal(t, []ceilingRun{{same, "same batching as scenario 1"}, {500, "large batches"}}, ceilingRuns(&cfg))
	for _, c := range []struct {
		batch int
		want  []ceilingRun
	}{
		{same, []ceilingRun{{same, "same batching as scenario 1"}, {500, "large batches"}}},
		{7, []ceilingRun{{7, "--ceiling-batch 7"}, {500, "large batches"}}},
		{500, []ceilingRun{{500, "--ceiling-batch 500"}}},
	} {
		cfg := cfg
		cfg.CeilingBatch = c.batch
		require.Equal(t, c.want, ceilingRuns(&cfg), "--ceiling-batch %d", c.batch)
	}

	for _, batch := range []int{same, 7} {
		r := newReport(&cfg)
		r.Throughput = &ThroughputResult{Clients: cfg.Clients, Seconds: 15, Commands: 150000, PerSecond: 10000}
		r.Ceiling = []CeilingResult{{Batch: batch, PerSecond: 12000}, {Batch: 500, PerSecond: 40000}}
		r.finish(&cfg)
		i := slices.IndexFunc(r.Goals, func(g Goal) bool { return g.Scenario == "6 ceiling" })
		notes := strings.Join(r.Notes, "\n")
		if batch == same {
			require.GreaterOrEqual(t, i, 0)
			require.Equal(t, "0.83", r.Goals[i].Measured)
			require.True(t, *r.Goals[i].Met)
			require.NotContains(t, notes, "6 ceiling")
			continue
		}
		require.Negative(t, i, "a fraction of the ceiling at another batching has no goal")
		require.Zero(t, r.CeilingFraction)
		require.Contains(t, notes, fmt.Sprintf("6 ceiling: no run had scenario 1's batching (%d commands per batch)", same))
	}
}

// TestP50RatioNeedsBothSides: a round in which lockworker (or the original
// design) answered no acquire has no p50 ratio: the peer's p50 goal is
// missed, not met at 0x, and builds prints "-", not 0.00x.
func TestP50RatioNeedsBothSides(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients = 16
	answered := ThroughputResult{Clients: 16, Seconds: 15, Commands: 100000, PerSecond: 6666, Acquire: dist{N: 50000, P50: 2}}
	silent := ThroughputResult{Clients: 16, Seconds: 15} // nothing answered, nothing failed
	for _, c := range []struct {
		name                 string
		lockworker, original ThroughputResult
	}{
		{"lockworker answered nothing", silent, answered},
		{"the original design answered nothing", answered, silent},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newReport(&cfg)
			round := PeerRound{Lockworker: c.lockworker, Original: c.original, Ratio: 1, P50Ratio: p50Ratio(c.lockworker, c.original)}
			r.Peer = &PeerResult{Target: "lockworker", Clients: 16, Rounds: []PeerRound{{Lockworker: answered, Original: answered, Ratio: 1, P50Ratio: 1}, round}}
			r.finish(&cfg)
			var p50 *Goal
			for i, g := range r.Goals {
				if strings.HasPrefix(g.What, "acquire p50 / original design's") {
					p50 = &r.Goals[i]
				}
			}
			require.NotNil(t, p50)
			require.NotNil(t, p50.Met)
			require.False(t, *p50.Met)
			require.Equal(t, "- (round 2: no acquire answered)", p50.Measured)

			b := &BuildsResult{Clients: 16, Rounds: []BuildsRound{{Baseline: c.original, Candidate: c.lockworker, P50Ratio: p50Ratio(c.lockworker, c.original)}}}
			var out bytes.Buffer
			b.print(&out, &cfg)
			require.Contains(t, out.String(), "acquire p50 -,")
			require.NotContains(t, out.String(), "acquire p50 0.00x")
		})
	}
}

// TestLatencyGoalsJudgedAtTheirRate: scenario 2's goals (p50 <= 3 ms, p99
// <= 15 ms) are those at 1,000/s: at another rate its figures are shown
// with no verdict, and a note says why.
func TestLatencyGoalsJudgedAtTheirRate(t *testing.T) {
	cfg := DefaultConfig()
	for _, rate := range []int{100, 1000, 5000} {
		r := newReport(&cfg)
		r.Latency = &LatencyResult{Rate: rate, Sent: 1000, Answered: 1000, Acquire: dist{N: 500, P50: 2.83, P99: 5.38}, Release: dist{N: 500, P50: 2, P99: 4}}
		r.finish(&cfg)
		var goals []Goal
		for _, g := range r.Goals {
			if g.Scenario == "2 latency" {
				goals = append(goals, g)
			}
		}
		require.Len(t, goals, 4, "%d/s", rate)
		notes := strings.Join(r.Notes, "\n")
		for _, g := range goals {
			require.Contains(t, g.What, fmt.Sprintf("at %d/s", rate))
			if rate == 1000 {
				require.NotNil(t, g.Met, g.What)
				require.True(t, *g.Met, g.What)
				require.NotContains(t, notes, "are not judged")
				continue
			}
			require.Nil(t, g.Met, "%s at %d/s", g.What, rate)
			require.Equal(t, "(no goal)", g.Target)
			require.Contains(t, g.Measured, " ms")
			require.Contains(t, notes, fmt.Sprintf("at %s/s its figures are not judged", fmtNum(float64(rate))))
		}
	}
}

// TestPostgresCPUIsTheWholeServers: the goals, figures and notes on CPU
// that include PostgreSQL's say it is the whole server's, other databases'
// load included, when it is measured.
func TestPostgresCPUIsTheWholeServers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkerBin, cfg.BrokerBin, cfg.Clients = "lockworker", "devkafka", 8
	win := cpuWindow(1000, secs(0.05), secs(0.05), secs(0.1))
	for _, measured := range []bool{true, false} {
		r := newReport(&cfg)
		r.postgresFound(measured)
		r.Peer = &PeerResult{Target: "lockworker", Clients: 8, Rounds: []PeerRound{{Lockworker: win, Original: win, Ratio: 1, P50Ratio: 1}}}
		r.Modes = &ModesResult{Clients: 8, Limit: modesLimit, Rounds: []ModesRound{{Exclusive: win, Shared: win, Semaphore: win, SharedCost: 1}}}
		r.Builds = &BuildsResult{Clients: 8, Rounds: []BuildsRound{{Baseline: win, Candidate: win}}}
		r.finish(&cfg)
		var table bytes.Buffer
		r.print(&table, &cfg)
		require.Contains(t, table.String(), "CPU per command (worker, broker, whole PostgreSQL server)")
		require.Equal(t, 2, strings.Count(table.String(), "CPU ms per command (worker, broker, whole PostgreSQL server)"), "modes' and builds'")
		note := "PostgreSQL's CPU is its whole server's: the backends of every database on it (other jobs' too)"
		if measured {
			require.Contains(t, strings.Join(r.Notes, "\n"), note)
		} else {
			require.NotContains(t, strings.Join(r.Notes, "\n"), note)
		}
	}
}

// TestHeaderNamesTheBroker: the report's header names the broker the
// target used, not one guessed from --broker-memory.
func TestHeaderNamesTheBroker(t *testing.T) {
	for _, c := range []struct {
		cfg    Config
		broker string
	}{
		{Config{Brokers: []string{"kafka:9092"}}, "external (--brokers)"},
		{Config{BrokerBin: "devkafka", BrokerMemory: true}, "devkafka process (data dir)"},
	} {
		r := &Report{Mode: "child process", Broker: c.broker, Brokers: []string{"kafka:9092"}}
		var table bytes.Buffer
		r.print(&table, &c.cfg)
		require.Contains(t, table.String(), "broker: "+c.broker+" kafka:9092 ")
		require.NotContains(t, table.String(), "kfake")
	}
}

// TestFloorGoalsNotJudged: against a floor (--worker-bin floor:MODE) the
// goals, lockworker's, are shown unjudged, each naming the floor, and a
// note says why.
func TestFloorGoalsNotJudged(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkerBin, cfg.BrokerBin, cfg.Clients, cfg.Rate = "floor:kafka", "devkafka", 16, 100
	r := newReport(&cfg)
	r.postgresFound(true)
	win := cpuWindow(45000, secs(0.3), secs(0.1), secs(0.2))
	r.Latency = &LatencyResult{Rate: 100, Sent: 1000, Answered: 1000, Acquire: dist{N: 500, P50: 1.2, P99: 4}, Release: dist{N: 500, P50: 1, P99: 3}}
	r.Resources = &ResourceResult{PeakRSSMiB: 20}
	r.Peer = &PeerResult{Target: "floor:kafka", Clients: 16, Rounds: []PeerRound{{Lockworker: win, Original: win, Ratio: 1.03, P50Ratio: 1}}}
	r.finish(&cfg)
	var peer int
	for _, g := range r.Goals {
		require.Nil(t, g.Met, g.What)
		require.True(t, strings.HasPrefix(g.What, "floor:kafka: "), g.What)
		if g.Scenario == "peer" {
			peer++
		}
	}
	require.Equal(t, 5, peer, "throughput, p50 and CPU ratios, light-load p50 and p99")
	require.Contains(t, r.Notes, "goals not judged: the target is floor:kafka, a floor, not lockworker")
	var table bytes.Buffer
	r.print(&table, &cfg)
	for _, line := range strings.Split(table.String(), "\n") {
		require.False(t, strings.HasSuffix(line, " yes") || strings.HasSuffix(line, " NO"), line)
	}

	// lockworker's run is judged.
	cfg.WorkerBin = "lockworker"
	r = newReport(&cfg)
	r.Peer = &PeerResult{Target: "lockworker", Clients: 16, Rounds: []PeerRound{{Lockworker: win, Original: win, Ratio: 1.03, P50Ratio: 1}}}
	r.finish(&cfg)
	require.NotNil(t, r.Goals[0].Met)
	require.NotContains(t, r.Goals[0].What, "floor")
}

// TestLightLoadGoalsJudgedAtTheirRate: the peer's light-load goals (acquire
// p50 <= 1.5 ms, p99 <= 5 ms) are issue 17's at 100/s: a lighter load meets
// them more easily, so at any other rate scenario 2's figures are shown
// with no verdict, and a note says why.
func TestLightLoadGoalsJudgedAtTheirRate(t *testing.T) {
	cfg := DefaultConfig()
	for _, rate := range []int{5, 100, 1000} {
		r := newReport(&cfg)
		r.Latency = &LatencyResult{Rate: rate, Sent: 100, Answered: 100, Acquire: dist{N: 50, P50: 1.2, P99: 4}, Release: dist{N: 50, P50: 1, P99: 3}}
		r.Peer = &PeerResult{Target: "lockworker", Clients: 16, Rounds: []PeerRound{{Ratio: 1, P50Ratio: 1}}}
		r.finish(&cfg)
		var light []Goal
		for _, g := range r.Goals {
			if strings.HasPrefix(g.What, "light load") {
				light = append(light, g)
			}
		}
		require.Len(t, light, 2, "%d/s", rate)
		notes := strings.Join(r.Notes, "\n")
		for _, g := range light {
			require.Contains(t, g.What, fmt.Sprintf("at %d/s", rate))
			if rate == lightLoadRate {
				require.NotNil(t, g.Met, g.What)
				require.True(t, *g.Met, g.What)
				require.NotContains(t, notes, "light-load goals")
				continue
			}
			require.Nil(t, g.Met, "%s at %d/s", g.What, rate)
			require.Equal(t, "(no goal)", g.Target)
			require.Contains(t, notes, fmt.Sprintf("peer: its light-load goals (acquire p50 <= 1.5 ms, p99 <= 5 ms) are at 100/s: at %s/s its figures are not judged", fmtNum(float64(rate))))
		}
	}
}

// TestCPULabelSaysWhatIsCounted: the modes' and builds' CPU per command
// names the processes it adds up: the broker only when it runs as a
// process of its own (--broker-bin), the worker alone only as a child.
func TestCPULabelSaysWhatIsCounted(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"in process", Config{}, "CPU ms per command (lockbench's whole process (worker, broker, load generator), whole PostgreSQL server)"},
		{"in process, broker process", Config{BrokerBin: "devkafka"}, "CPU ms per command (lockbench's whole process (worker, load generator), broker, whole PostgreSQL server)"},
		{"child, broker in lockbench", Config{WorkerBin: "lockworker"}, "CPU ms per command (worker, whole PostgreSQL server; not the broker, which runs in lockbench's process)"},
		{"child, broker process", Config{WorkerBin: "lockworker", BrokerBin: "devkafka"}, "CPU ms per command (worker, broker, whole PostgreSQL server)"},
		{"external", Config{Brokers: []string{"127.0.0.1:9092"}}, "CPU ms per command (not measured: the worker runs elsewhere (--brokers))"},
	} {
		r := &Report{Config: &c.cfg, Modes: &ModesResult{Clients: 8}, Builds: &BuildsResult{Clients: 8}}
		var table bytes.Buffer
		r.print(&table, &c.cfg)
		require.Equal(t, 2, strings.Count(table.String(), c.want), "%s: modes' and builds'\n%s", c.name, table.String())
	}
}

// TestAlternationSaysWhenUnbalanced: the peer, modes and builds reverse
// their order every other round, balanced only over an even count of
// rounds; with an odd count their tables say which order ran once more.
func TestAlternationSaysWhenUnbalanced(t *testing.T) {
	cfg := DefaultConfig()
	for _, c := range []struct {
		rounds int
		want   []string
	}{
		{1, []string{"1 round: lockworker then original design, never reversed, so not balanced",
			"1 round: exclusive then shared then semaphore, never reversed, so not balanced",
			"1 round: baseline then candidate, never reversed, so not balanced"}},
		{2, nil},
		{3, []string{"3 rounds, an odd count: lockworker then original design in 2, reversed in 1, so not balanced",
			"3 rounds, an odd count: exclusive then shared then semaphore in 2, reversed in 1, so not balanced",
			"3 rounds, an odd count: baseline then candidate in 2, reversed in 1, so not balanced"}},
		{4, nil},
	} {
		r := newReport(&cfg)
		r.Peer = &PeerResult{Target: "lockworker", Clients: 16, Rounds: make([]PeerRound, c.rounds)}
		r.Modes = &ModesResult{Clients: 16, Limit: modesLimit, Rounds: make([]ModesRound, c.rounds)}
		r.Builds = &BuildsResult{Clients: 16, Rounds: make([]BuildsRound, c.rounds)}
		var table bytes.Buffer
		r.print(&table, &cfg)
		for _, want := range c.want {
			require.Contains(t, table.String(), want)
		}
		if c.want == nil {
			require.NotContains(t, table.String(), "not balanced", "%d rounds", c.rounds)
		}
	}
}

// TestLatencySaysHowItIsMeasured: scenario 2's table says that each
// release follows its acquire by 1/rate, unanswered, and that its last two
// legs split at a timestamp of 1 ms resolution.
func TestLatencySaysHowItIsMeasured(t *testing.T) {
	cfg := DefaultConfig()
	r := newReport(&cfg)
	r.Latency = &LatencyResult{Rate: 1000, Sent: 10, Answered: 10}
	var table bytes.Buffer
	r.print(&table, &cfg)
	require.Contains(t, table.String(), "each release is sent 1 ms (1/rate) after its acquire, before its grant is read")
	require.Contains(t, table.String(), "(relay produce is the reply's Kafka record timestamp, 1 ms resolution")
}
