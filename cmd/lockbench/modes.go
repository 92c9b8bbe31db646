package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/omninode/lockworker/topics"
)

// The modes scenario (issue 14) measures what the lock model's modes cost
// per command beside plain mutexes, with the same clients and window,
// alternating (every other round in reverse order): exclusive (each client
// its own lock), shared (every client a read lock on one lock) and a
// semaphore (every client on one lock of limit ModesLimit, waiting its
// turn).

// ModesRound is one round of the three shapes.
type ModesRound struct {
	Exclusive ThroughputResult `json:"exclusive"`
	Shared    ThroughputResult `json:"shared"`
	Semaphore ThroughputResult `json:"semaphore"`
	// SharedCost is the CPU (what the header counts in the run's mode) per shared
	// command over the CPU per exclusive command; 0 when not measured.
	SharedCost float64 `json:"shared_cost_ratio"`
}

// ModesResult is the modes scenario.
type ModesResult struct {
	Clients int          `json:"clients"`
	Limit   int          `json:"semaphore_limit"`
	Rounds  []ModesRound `json:"rounds"`
}

// modesLimit is the semaphore's size.
const modesLimit = 10

func (b *bench) modes(ctx context.Context) (ModesResult, error) {
	res := ModesResult{Clients: b.cfg.Clients, Limit: modesLimit}
	for round := range b.cfg.Rounds {
		var r ModesRound
		var err error
		shapes := inTurn([]struct {
			dst   *ThroughputResult
			via   string
			shape lockShape
		}{
			{&r.Exclusive, "exclusive", lockShape{}},
			{&r.Shared, "shared", lockShape{lock: b.rid("modes", "shared", round), mode: topics.ModeShared}},
			{&r.Semaphore, fmt.Sprintf("semaphore of %d", modesLimit), lockShape{lock: b.rid("modes", "sem", round), limit: modesLimit, wait: 30}},
		}, round)
		b.progress("modes round %d of %d: %s, %s, %s; %d clients", round+1, b.cfg.Rounds, shapes[0].via, shapes[1].via, shapes[2].via, b.cfg.Clients)
		for _, s := range shapes {
			if *s.dst, err = b.throughput(ctx, s.via, b.shapedCycler(30*time.Second, s.shape), false); err != nil {
				return res, err
			}
			b.quiesce(ctx, fmt.Sprintf("modes round %d, %s", round+1, s.via), time.Minute)
		}
		r.SharedCost = cpuRatio(r.Shared, r.Exclusive)
		res.Rounds = append(res.Rounds, r)
	}
	return res, nil
}

// cpuPerCommand is the worker's, broker's and PostgreSQL's CPU seconds per
// command in a throughput window; ok is false without the worker's or
// PostgreSQL's figure, or a broker process's (not measured). The broker's
// counts only when it runs as its own process (--broker-bin); otherwise it
// is in lockbench's process (child worker) or the worker's (in process).
func cpuPerCommand(t ThroughputResult) (_ float64, ok bool) {
	c := t.CPU
	if t.Commands == 0 || c.WorkerCPU == nil || c.PostgresCPU == nil || c.brokerLost {
		return 0, false
	}
	sum := *c.WorkerCPU + *c.PostgresCPU
	if c.BrokerCPU != nil {
		sum += *c.BrokerCPU
	}
	return sum / float64(t.Commands), true
}

// cpuCounted is what cpuPerCommand adds up in a run as cfg describes: the
// broker's CPU only when it runs as a process of its own (--broker-bin),
// the worker's alone only when it does (--worker-bin).
func cpuCounted(cfg *Config) string {
	switch {
	case len(cfg.Brokers) > 0:
		return "not measured: the worker runs elsewhere (--brokers)"
	case cfg.WorkerBin == "" && cfg.BrokerBin == "":
		return "lockbench's whole process (worker, broker, load generator), whole PostgreSQL server"
	case cfg.WorkerBin == "":
		return "lockbench's whole process (worker, load generator), broker, whole PostgreSQL server"
	case cfg.BrokerBin == "":
		return "worker, whole PostgreSQL server; not the broker, which runs in lockbench's process"
	}
	return "worker, broker, whole PostgreSQL server"
}

// cpuRatio is num's CPU per command over den's; 0 (not measured) when
// either has no figure.
func cpuRatio(num, den ThroughputResult) float64 {
	n, nOK := cpuPerCommand(num)
	d, dOK := cpuPerCommand(den)
	if !nOK || !dOK || d <= 0 {
		return 0
	}
	return n / d
}

// cpuMissing is why cpuPerCommand has no figure for t where every process
// it counts was measured (cpuUnjudged is ""): no command, or a reading
// that failed at the start or the end of the window.
func cpuMissing(t ThroughputResult) string {
	if t.Commands == 0 {
		return "no command completed in the window"
	}
	var lost []string
	if t.CPU.WorkerCPU == nil {
		lost = append(lost, "the worker's")
	}
	if t.CPU.brokerLost {
		lost = append(lost, "the broker process's")
	}
	if t.CPU.PostgresCPU == nil {
		lost = append(lost, "PostgreSQL's")
	}
	if len(lost) == 0 {
		return "no CPU figure"
	}
	return "reading " + strings.Join(lost, " and ") + " CPU failed at the start or the end of the window"
}

// fmtCPUPerCommand is cpuPerCommand in ms, or "-".
func fmtCPUPerCommand(t ThroughputResult) string {
	if c, ok := cpuPerCommand(t); ok {
		return fmt.Sprintf("%.3f ms/cmd", c*1000)
	}
	return "- ms/cmd"
}

// fmtRatio is a ratio, or "-" when it is 0 (not measured).
func fmtRatio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

func (r *Report) modesGoals() {
	m := r.Modes
	if m == nil || len(m.Rounds) == 0 {
		return
	}
	worst, have, missing := 0.0, true, ""
	var errs int64
	for i, x := range m.Rounds {
		worst, have = max(worst, x.SharedCost), have && x.SharedCost > 0
		errs += x.Exclusive.Errors + x.Shared.Errors + x.Semaphore.Errors
		for _, t := range []ThroughputResult{x.Exclusive, x.Shared} {
			if _, ok := cpuPerCommand(t); !ok && missing == "" {
				missing = fmt.Sprintf("round %d, %s: %s", i+1, t.Via, cpuMissing(t))
			}
		}
	}
	r.goal("modes", fmt.Sprintf("CPU per shared command / per exclusive, %d holders, worst round", m.Clients), "<= 2x", worst, "x", worst <= 2, have)
	if why := r.cpuUnjudged(); why != "" {
		r.unjudged()
		r.note("modes: the CPU ratio is not judged: " + why)
	} else if !have && missing != "" && errs == 0 { // with errors, a miss
		r.note("modes: the CPU ratio is not judged: " + missing)
	}
	r.failedIn(errs)
}

func (m *ModesResult) print(w io.Writer, cfg *Config) {
	fmt.Fprintf(w, "\nmodes: %d clients acquiring and releasing; CPU ms per command (%s)\n", m.Clients, cpuCounted(cfg))
	fmt.Fprint(w, unbalanced([]string{"exclusive", "shared", "semaphore"}, len(m.Rounds)))
	for i, x := range m.Rounds {
		for _, t := range []ThroughputResult{x.Exclusive, x.Shared, x.Semaphore} {
			fmt.Fprintf(w, "  round %d  %-16s %8s cmd/s  acquire p50 %7.2f ms  p99 %7.2f ms  CPU %s  errors %d%s\n",
				i+1, t.Via, fmtNum(t.PerSecond), t.Acquire.P50, t.Acquire.P99, fmtCPUPerCommand(t), t.Errors, fmtUnanswered(t.Unanswered))
		}
		fmt.Fprintf(w, "  round %d  shared / exclusive CPU per command: %s\n", i+1, fmtRatio(x.SharedCost))
	}
}
