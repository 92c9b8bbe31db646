package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is everything a run measured.
type Report struct {
	Started time.Time `json:"started"`
	Mode    string    `json:"mode"`
	// Broker is the broker the run used (the last target's).
	Broker  string   `json:"broker"`
	Brokers []string `json:"brokers"`
	Machine struct {
		CPUs       int    `json:"cpus"`
		GOMAXPROCS int    `json:"gomaxprocs"`
		Go         string `json:"go"`
		PostgreSQL string `json:"postgresql"`
	} `json:"machine"`
	Config *Config `json:"config"`
	// PostgresCPUMeasured says lockbench found PostgreSQL's server in
	// /proc for every target it connected, so the figures of CPU count
	// PostgreSQL's. Without it the goals on CPU that include PostgreSQL's
	// are not judged.
	PostgresCPUMeasured bool `json:"postgres_cpu_measured"`
	// targets is how many targets connect started, for
	// PostgresCPUMeasured.
	targets int

	Throughput    *ThroughputResult `json:"throughput,omitempty"`
	ThroughputSDK *ThroughputResult `json:"throughput_sdk,omitempty"`
	Latency       *LatencyResult    `json:"latency,omitempty"`
	Contention    *ContentionResult `json:"contention,omitempty"`
	Expiry        *ExpiryResult     `json:"expiry,omitempty"`
	Cleanup       []CleanupCase     `json:"cleanup,omitempty"`
	Ceiling       []CeilingResult   `json:"ceiling,omitempty"`
	// CeilingFraction is scenario 1's commands/s over the ceiling with the
	// same batching.
	CeilingFraction float64         `json:"ceiling_fraction,omitempty"`
	Resources       *ResourceResult `json:"resources,omitempty"`
	Failover        *FailoverResult `json:"failover,omitempty"`
	Soak            *SoakResult     `json:"soak,omitempty"`
	Peer            *PeerResult     `json:"peer,omitempty"`
	Modes           *ModesResult    `json:"modes,omitempty"`
	Builds          *BuildsResult   `json:"builds,omitempty"`
	Burst           *BurstResult    `json:"burst,omitempty"`

	Driver DriverStats `json:"driver"`

	Goals []Goal   `json:"goals"`
	Notes []string `json:"notes,omitempty"`
	// Error is why the run failed: the report has only the scenarios that
	// completed before it (and what failover or builds measured).
	Error string `json:"error,omitempty"`
}

// hasResults says whether some scenario has a result in r.
func (r *Report) hasResults() bool {
	return r.Throughput != nil || r.ThroughputSDK != nil || r.Latency != nil || r.Contention != nil || r.Expiry != nil ||
		len(r.Cleanup) > 0 || len(r.Ceiling) > 0 || r.Resources != nil || r.Failover != nil || r.Soak != nil ||
		r.Peer != nil || r.Modes != nil || r.Builds != nil || r.Burst != nil
}

// Goal is one goal of issue 5 and whether this run met it.
type Goal struct {
	Scenario string `json:"scenario"`
	What     string `json:"what"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	// N is how many samples a percentile's figure is of.
	N   int64 `json:"n,omitempty"`
	Met *bool `json:"met,omitempty"`
	// noGoal says the goal is left unjudged on purpose (see unjudged).
	noGoal bool
}

func newReport(cfg *Config) *Report {
	r := &Report{Started: time.Now().UTC(), Config: cfg}
	r.Machine.CPUs, r.Machine.GOMAXPROCS, r.Machine.Go = runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version()
	return r
}

func (r *Report) goal(scenario, what, target string, measured float64, unit string, ok bool, have bool) {
	g := Goal{Scenario: scenario, What: what, Target: target, Measured: "-"}
	if have {
		g.Measured = fmtNum(measured) + unit
		g.Met = &ok
	}
	r.Goals = append(r.Goals, g)
}

// postgresFound records whether findPostmaster found the server of a
// target just connected: PostgreSQL's CPU is measured only if every
// target's was found.
func (r *Report) postgresFound(found bool) {
	r.PostgresCPUMeasured = found && (r.targets == 0 || r.PostgresCPUMeasured)
	r.targets++
}

// cpuUnjudged is why the goals on CPU per command are not judged in this
// run, or "" when they are: only with the worker a child process, the
// broker one of its own (--broker-bin) and PostgreSQL's server measured is
// cpuPerCommand the worker's, the broker's and PostgreSQL's CPU and nothing
// else.
func (r *Report) cpuUnjudged() string {
	switch {
	case r.Config == nil || r.Config.WorkerBin == "" || r.Config.BrokerBin == "":
		return "it counts the worker, the broker and PostgreSQL alike only with --worker-bin and --broker-bin " +
			"(in process the worker's CPU is lockbench's whole process, its load generator's included; " +
			"without --broker-bin the broker's is not counted)"
	case !r.PostgresCPUMeasured:
		return "PostgreSQL's CPU was not measured"
	}
	return ""
}

// pctGoal is goal for a percentile v (ms) of d, with d's sample count.
func (r *Report) pctGoal(scenario, what, target string, d dist, v float64, ok bool) {
	r.goal(scenario, what, target, v, " ms", ok, d.N > 0)
	r.Goals[len(r.Goals)-1].N = d.N
}

// latencyGoal is pctGoal for a percentile v (ms) of scenario 2, met at most
// limit and only when every command was answered as asked (whole); the
// figure then says how many were not.
func (r *Report) latencyGoal(scenario, what, target string, d dist, v, limit float64) {
	l := r.Latency
	r.goal(scenario, what, target, v, " ms", v <= limit && l.whole(), d.N > 0 || !l.whole())
	g := &r.Goals[len(r.Goals)-1]
	g.N = d.N
	if !l.whole() {
		g.Measured += fmt.Sprintf(", %d missing, %d unexpected", l.Missing, l.Unexpected)
	}
}

// latencyGoalAt is latencyGoal for a goal set at rate commands/s: at
// another rate the figure is shown, with no target and no verdict.
func (r *Report) latencyGoalAt(rate int, scenario, what, target string, d dist, v, limit float64) {
	judged := r.Latency.Rate == rate
	if !judged {
		target = "(no goal)"
	}
	r.latencyGoal(scenario, what, target, d, v, limit)
	if !judged {
		r.unjudged()
	}
}

// unjudgedAt notes that goals set at rate were not judged, scenario 2
// having run at another.
func (r *Report) unjudgedAt(rate int, goals string) {
	if l := r.Latency; l.Rate != rate {
		r.note(fmt.Sprintf("%s are at %s/s: at %s/s its figures are not judged", goals, fmtNum(float64(rate)), fmtNum(float64(l.Rate))))
	}
}

// failedIn makes the goal just added a miss when n commands failed in the
// windows it judges (a closed loop's errors: a refusal, a timeout), and its
// figure says how many: their cycles are missing from the rates, and a
// ratio of the survivors may look fine, or be missing when none survived.
func (r *Report) failedIn(n int64) {
	if n > 0 {
		r.missed(fmtNum(float64(n)) + " errors")
	}
}

// missed makes the goal just added a miss because some of what it judges
// failed (why, added to its figure), whether or not the rest gave a
// figure: a failure that left nothing to measure (every command failed, no
// lease expired) is a miss too, not a goal without a verdict. A goal
// unjudged on purpose stays unjudged.
func (r *Report) missed(why string) {
	g := &r.Goals[len(r.Goals)-1]
	g.Measured += ", " + why
	if !g.noGoal {
		g.Met = new(bool)
	}
}

// unjudged leaves the goal just added without a verdict on purpose: its
// goal is not for this run (set at another rate, or on CPU this run does
// not count), so failures do not make it a miss either.
func (r *Report) unjudged() {
	g := &r.Goals[len(r.Goals)-1]
	g.Met, g.noGoal = nil, true
}

// note adds a note once: the builds scenario connects a target per run.
func (r *Report) note(s string) {
	if !slices.Contains(r.Notes, s) {
		r.Notes = append(r.Notes, s)
	}
}

// fmtNum formats a figure for the report: a whole number (a count, or a
// figure that came out whole) and any figure from 100 on without decimals,
// with a comma every three digits from 1,000 on; a smaller one with one
// decimal from 10 on, else two.
func fmtNum(v float64) string {
	switch {
	case v >= 100 || v == math.Trunc(v) && !math.IsInf(v, 0):
		s := fmt.Sprintf("%.0f", math.Abs(v))
		var out []byte
		if v < 0 {
			out = append(out, '-')
		}
		for i := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				out = append(out, ',')
			}
			out = append(out, s[i])
		}
		return string(out)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// latencyGoalRate is the rate scenario 2's goals are set for
// (docs/performance.md's table: p50 <= 3 ms, p99 <= 15 ms at 1,000/s). A
// lighter load meets them more easily, and has goals of its own (the
// peer's light load); a heavier one is not what they promise.
const latencyGoalRate = 1000

// lightLoadRate is the rate of issue 17's light-load goals (the peer's,
// on scenario 2's figures): a lighter load meets them more easily, a
// heavier one is scenario 2's own.
const lightLoadRate = 100

// finish evaluates the goals of issue 5.
func (r *Report) finish(cfg *Config) {
	if l := r.Latency; l != nil {
		for _, x := range []struct {
			op string
			d  dist
		}{{"acquire", l.Acquire}, {"release", l.Release}} {
			r.latencyGoalAt(latencyGoalRate, "2 latency", fmt.Sprintf("%s p50 at %d/s", x.op, l.Rate), "<= 3 ms", x.d, x.d.P50, 3)
			r.latencyGoalAt(latencyGoalRate, "2 latency", fmt.Sprintf("%s p99 at %d/s", x.op, l.Rate), "<= 15 ms", x.d, x.d.P99, 15)
		}
		r.unjudgedAt(latencyGoalRate, "2 latency: its goals (p50 <= 3 ms, p99 <= 15 ms)")
	}
	if c := r.Contention; c != nil {
		r.pctGoal("3 contention", "hand-off p50 (release -> next lock.acquired)", "(no goal)", c.HandOff, c.HandOff.P50, true)
		r.unjudged()
		r.goal("3 contention", "grants in send order, queue_position its place", "all", float64(c.InOrder), fmt.Sprintf(" of %s", fmtNum(float64(c.Waiters))),
			c.Fair && c.Granted == c.Waiters && c.Positions, true)
		if !c.Positions {
			r.Goals[len(r.Goals)-1].Measured += ", positions wrong"
		}
	}
	if e := r.Expiry; e != nil {
		r.pctGoal("4 expiry", "expires_at -> lock.expired on topic, p99", "<= 1,000 ms", e.OnTopic, e.OnTopic.P99, e.OnTopic.P99 <= 1000)
		if e.Expired != e.Leases {
			r.missed(fmt.Sprintf("%s of %s expired", fmtNum(float64(e.Expired)), fmtNum(float64(e.Leases))))
		}
	}
	// A cleanup that cleans less than was seeded is fast for it: each case
	// the worker ran is judged on its cleaned_count too (the 100 expired
	// rows in their time goal).
	for _, c := range r.Cleanup {
		all := c.Cleaned == c.Locks
		switch {
		case c.EndToEndMS == 0: // the direct transaction alone: no answer to judge
		case c.Locks == 100 && c.Kind == kindIdle:
			r.goal("5 cleanup", "clean 100 expired locks (worker poll->commit)", "< 10 ms", c.WorkerMS, " ms", c.WorkerMS < 10 && all, c.WorkerMS > 0)
			if !all {
				r.Goals[len(r.Goals)-1].Measured += fmt.Sprintf(", cleaned %s of %s", fmtNum(float64(c.Cleaned)), fmtNum(float64(c.Locks)))
			}
		default:
			r.goal("5 cleanup", fmt.Sprintf("%s locks, %s: all cleaned", fmtNum(float64(c.Locks)), c.Kind), "all",
				float64(c.Cleaned), " of "+fmtNum(float64(c.Locks)), all, true)
		}
	}
	if tp := r.Throughput; tp != nil && len(r.Ceiling) > 0 {
		// Judged at any rate of scenario 1's, 0 too (every cycle failed),
		// but only against the ceiling batched as its worker batches.
		i := slices.IndexFunc(r.Ceiling, func(c CeilingResult) bool { return c.Batch == cfg.sameBatching() })
		if i >= 0 && r.Ceiling[i].PerSecond > 0 {
			r.CeilingFraction = tp.PerSecond / r.Ceiling[i].PerSecond
			r.goal("6 ceiling", "pipeline / PostgreSQL ceiling (same batching)", ">= 0.5", r.CeilingFraction, "", r.CeilingFraction >= 0.5, true)
			r.failedIn(tp.Errors)
		} else if i < 0 {
			r.note(fmt.Sprintf("6 ceiling: no run had scenario 1's batching (%d commands per batch): the pipeline's fraction of the ceiling is not judged",
				cfg.sameBatching()))
		}
	}
	if res := r.Resources; res != nil {
		r.goal("7 resources", "worker peak RSS", "<= 200 MiB", res.PeakRSSMiB, " MiB", res.PeakRSSMiB <= 200, res.PeakRSSMiB > 0)
		if r.Mode == "in-process" {
			r.Goals[len(r.Goals)-1].What += " (whole lockbench process)"
		}
	}
	r.soakGoals()
	r.peerGoals()
	r.modesGoals()
	r.floorGoals(cfg)
	if d := r.Driver; d.ProduceErrors > 0 || d.Undecodable > 0 {
		r.note(fmt.Sprintf("driver: %d commands were not produced and %d replies could not be decoded: "+
			"the scenarios count those of their windows as timeouts, errors or missing answers", d.ProduceErrors, d.Undecodable))
	}
	if r.PostgresCPUMeasured {
		r.note("PostgreSQL's CPU is its whole server's: the backends of every database on it (other jobs' too), its autovacuum and " +
			"background processes, but not --pg-sample's connection; the figures that include it err high, never low")
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("machine: %d CPUs shared by lockbench, the worker, the broker and PostgreSQL (and whatever else runs): figures are noisy", r.Machine.CPUs))
}

// floorGoals leaves the goals unjudged when the target is a floor
// (--worker-bin floor:MODE): they are lockworker's, and a floor that meets
// them says nothing of it. Each names the floor, so that a goal line
// copied alone still says what it measured.
func (r *Report) floorGoals(cfg *Config) {
	if floorMode(cfg.WorkerBin) == "" || len(r.Goals) == 0 {
		return
	}
	for i := range r.Goals {
		r.Goals[i].What = cfg.WorkerBin + ": " + r.Goals[i].What
		r.Goals[i].Met = nil
	}
	r.note("goals not judged: the target is " + cfg.WorkerBin + ", a floor, not lockworker")
}

func (r *Report) print(w io.Writer, cfg *Config) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("lockbench  %s  mode: %s  broker: %s %s  %s  %d CPUs (GOMAXPROCS %d)  %s\n", r.Started.Format(time.RFC3339), r.Mode,
		cmp.Or(r.Broker, "-"), strings.Join(r.Brokers, ","), r.Machine.PostgreSQL, r.Machine.CPUs, r.Machine.GOMAXPROCS, r.Machine.Go)
	if cfg.Quick {
		p("QUICK MODE: small counts, figures are only a smoke test\n")
	}
	if r.Error != "" {
		p("RUN FAILED: %s\n(only the scenarios that completed before it are reported)\n", r.Error)
	}
	p("\n%-13s %-50s %-12s %-24s %s\n", "scenario", "goal", "target", "measured", "met")
	p("%s\n", strings.Repeat("-", 108))
	for _, g := range r.Goals {
		met := ""
		if g.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*g.Met]
		}
		measured := g.Measured
		if g.N > 0 {
			measured += fmt.Sprintf(" n=%d", g.N)
		}
		p("%-13s %-50s %-12s %-24s %s\n", g.Scenario, g.What, g.Target, measured, met)
	}
	d := func(name string, x dist) {
		p("  %-34s n=%-7d p50 %8.2f  p95 %8.2f  p99 %8.2f  max %8.2f  mean %8.2f ms\n", name, x.N, x.P50, x.P95, x.P99, x.Max, x.Mean)
	}
	for _, tp := range []*ThroughputResult{r.Throughput, r.ThroughputSDK} {
		if tp == nil {
			continue
		}
		p("\n1 throughput (%s): %d clients, %.1f s: %d commands, %s commands/s, %d errors%s\n", tp.Via, tp.Clients, tp.Seconds, tp.Commands, fmtNum(tp.PerSecond), tp.Errors,
			fmtUnanswered(tp.Unanswered))
		d("acquire (closed loop)", tp.Acquire)
		d("release (closed loop)", tp.Release)
		if tp.Batches > 0 {
			p("  worker: %d batches, %.1f records per batch, %.2f ms per batch transaction\n", tp.Batches, tp.MeanBatch, tp.MeanBatchMS)
		}
		printCPU(w, tp.CPU)
		if tp.SQL != nil {
			printSQL(w, tp.SQL)
		}
		if tp.Activity != nil {
			printActivity(w, tp.Activity)
		}
	}
	if l := r.Latency; l != nil {
		p("\n2 latency: open loop %d commands/s for %.0f s after %d warm-up commands (unread), from intended send time: %d sent, %d answered, %d missing, %d unexpected (in no figure); sender lag max %.1f ms\n",
			l.Rate, l.Seconds, l.WarmupSent, l.Sent, l.Answered, l.Missing, l.Unexpected, l.SendLagMaxMS)
		p("  each release is sent %s ms (1/rate) after its acquire, before its grant is read: when that is shorter than the acquire's answer,\n"+
			"  the two can share a worker batch (the release going ahead with its acquire), which a requester waiting for lock.acquired never sends\n",
			fmtNum(1000/float64(l.Rate)))
		d("acquire", l.Acquire)
		d("release", l.Release)
		d("all", l.All)
		d("  of which worker poll->commit", l.Worker)
		d("  leg send -> transaction start", l.ToTx)
		d("  leg tx start -> relay produce", l.InTx)
		d("  leg relay produce -> read", l.FromRelay)
		p("  (relay produce is the reply's Kafka record timestamp, 1 ms resolution: the last two legs split within a millisecond, a negative leg counts as 0.001 ms)\n")
		printCPU(w, l.CPU)
	}
	if c := r.Contention; c != nil {
		p("\n3 contention: %d waiters on one lock, %d granted, fair (grant order = send order): %v (%d in order)%s; queue_position = place sent: %v%s\n",
			c.Waiters, c.Granted, c.Fair, c.InOrder, map[bool]string{true: "", false: "; " + c.FirstMismatch}[c.FirstMismatch == ""],
			c.Positions, map[bool]string{true: "", false: " (" + c.PositionMismatch + ")"}[c.PositionMismatch == ""])
		d("hand-off release -> lock.acquired", c.HandOff)
	}
	if e := r.Expiry; e != nil {
		p("\n4 expiry: %d leases of %.1f s, %d granted, %d lock.expired seen on %s\n", e.Leases, e.LeaseSeconds, e.Granted, e.Expired, "the lifecycle topic")
		d("expires_at -> read from topic", e.OnTopic)
		d("expires_at -> occurred_at (DB)", e.InDB)
	}
	if len(r.Cleanup) > 0 {
		p("\n5 cleanup (commands lock_name \"*\" in the seeded namespace, max_age_seconds 3600, sent again while the answer says more)\n")
		p("  %-28s %8s %8s %14s %14s %14s %9s %s\n", "kind", "locks", "commands", "end to end ms", "worker ms", "direct tx ms", "cleaned", "relay drain")
		for _, c := range r.Cleanup {
			drain := ""
			if c.OutboxRows > 0 {
				drain = fmt.Sprintf("%d rows in %.1f s after commit (%s rows/s)", c.OutboxRows, c.DrainSeconds, fmtNum(float64(c.OutboxRows)/max(c.DrainSeconds, 0.001)))
			}
			p("  %-28s %8d %8d %14.1f %14.1f %14.1f %9d %s\n", c.Kind, c.Locks, c.Commands, c.EndToEndMS, c.WorkerMS, c.DirectMS, c.Cleaned, drain)
		}
	}
	if len(r.Ceiling) > 0 {
		p("\n6 ceiling: the worker's SQL (handlers batch + offset row) straight on PostgreSQL, no Kafka\n")
		for _, c := range r.Ceiling {
			p("  %-28s %d transactions at once x %4d commands/batch, pool %d: %s commands/s; CPU PostgreSQL %s, lockbench %s over %.1f s; machine busy %.0f%%\n",
				c.Label, c.Transactions, c.Batch, c.PoolConns, fmtNum(c.PerSecond), fmtCPU("%.1f s", c.CPU.PostgresCPU), fmtCPU("%.1f s", c.CPU.LockbenchCPU),
				c.Seconds, c.CPU.MachineBusyPct)
			d("  batch transaction", c.BatchTx)
		}
		if r.CeilingFraction > 0 {
			p("  pipeline reaches %.0f%% of the ceiling with the same batching\n", 100*r.CeilingFraction)
		}
	}
	if res := r.Resources; res != nil {
		p("\n7 resources (%s)\n  peak RSS %.1f MiB; CPU %s per 1,000 commands over scenario 1 (PostgreSQL %s per 1,000)\n", res.Measured, res.PeakRSSMiB,
			fmtCPU("%.3f s", res.CPUPer1000), fmtCPU("%.3f s", res.PGCPUPer1000))
		p("  peak RSS after:")
		for _, m := range res.PeakAfter {
			p(" %s %.0f MiB;", m.After, m.MiB)
		}
		p("\n")
	}
	if r.Failover != nil {
		r.Failover.print(p)
	}
	if r.Soak != nil {
		r.Soak.print(w, cfg.SoakWindow)
	}
	if r.Peer != nil {
		r.Peer.print(w)
	}
	if r.Modes != nil {
		r.Modes.print(w, cfg)
	}
	if r.Builds != nil {
		r.Builds.print(w, cfg)
	}
	if r.Burst != nil {
		r.Burst.print(w)
	}
	if d := r.Driver; d.Produced > 0 {
		p("\ndriver: %d commands produced, %d failed; %d replies read, %d undecodable, %d that nobody waited for (warm-up, late or repeated answers, a holder's lock.expired)\n",
			d.Produced, d.ProduceErrors, d.Received, d.Undecodable, d.Unrouted)
	}
	for _, n := range r.Notes {
		p("\nnote: %s", n)
	}
	p("\n")
}

// fmtUnanswered says how many of a closed loop's errors were still
// unanswered when the grace after its window ended, if any.
func fmtUnanswered(n int64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d unanswered by the grace's end after the window)", n)
}

func printCPU(w io.Writer, c cpuUse) {
	broker := "" // no broker process: the broker is in lockbench's or the worker's
	if c.BrokerCPU != nil || c.brokerLost {
		broker = "broker process " + fmtCPU("%.1f s", c.BrokerCPU) + ", "
	}
	fmt.Fprintf(w, "  CPU over the window: worker %s, %slockbench process %s, PostgreSQL %s; machine busy %.0f%%\n",
		fmtCPU("%.1f s", c.WorkerCPU), broker, fmtCPU("%.1f s", c.LockbenchCPU), fmtCPU("%.1f s", c.PostgresCPU), c.MachineBusyPct)
}
