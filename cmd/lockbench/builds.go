package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// The builds scenario measures one lockworker binary against another, as
// issue 17 asks of every change: scenario 1's closed loop on raw records,
// --rounds rounds, each running the baseline (--baseline-bin) and the
// candidate (--worker-bin), first one then the other, each on a target of
// its own (a fresh schema and broker, the worker as a child process). On
// a noisy machine only ratios within one run say anything; alternating
// keeps a slow minute from landing on one build alone.

// BuildsRound is one round of the two builds.
type BuildsRound struct {
	Baseline  ThroughputResult `json:"baseline"`
	Candidate ThroughputResult `json:"candidate"`
	// Ratio is the candidate's commands/s over the baseline's, P50Ratio
	// its acquire p50 over the baseline's, CPURatio its CPU per command
	// (what the header counts in the run's mode) over the baseline's (the last two 0:
	// not measured).
	Ratio    float64 `json:"throughput_ratio"`
	P50Ratio float64 `json:"acquire_p50_ratio"`
	CPURatio float64 `json:"cpu_per_command_ratio"`
}

// BuildsResult is the builds scenario.
type BuildsResult struct {
	Baseline  string        `json:"baseline_bin"`
	Candidate string        `json:"candidate_bin"`
	Clients   int           `json:"clients"`
	Rounds    []BuildsRound `json:"rounds"`
}

// inTurn is the order of a round's runs: xs, reversed every other round.
// The run before leaves work behind (a dropped schema, a checkpoint, the
// outbox's tail), so over an even count of rounds each run goes before
// each other run as often as after it.
func inTurn[T any](xs []T, round int) []T {
	if round%2 == 0 {
		return xs
	}
	r := slices.Clone(xs)
	slices.Reverse(r)
	return r
}

// unbalanced says, for an odd count of rounds, that inTurn ran names (the
// runs, in round 1's order) in that order once more than reversed: what
// running first or second does lands on one side more often. "" for an
// even count.
func unbalanced(names []string, rounds int) string {
	if rounds%2 == 0 {
		return ""
	}
	order := strings.Join(names, " then ")
	if rounds == 1 {
		return "  1 round: " + order + ", never reversed, so not balanced\n"
	}
	return fmt.Sprintf("  %d rounds, an odd count: %s in %d, reversed in %d, so not balanced\n", rounds, order, (rounds+1)/2, rounds/2)
}

func builds(ctx context.Context, cfg *Config, rep *Report, log zerolog.Logger, progress func(string, ...any)) (*BuildsResult, error) {
	res := &BuildsResult{Baseline: cfg.BaselineBin, Candidate: cfg.WorkerBin, Clients: cfg.Clients}
	for round := range cfg.Rounds {
		var r BuildsRound
		runs := []struct {
			bin string
			dst *ThroughputResult
		}{{cfg.BaselineBin, &r.Baseline}, {cfg.WorkerBin, &r.Candidate}}
		for _, s := range inTurn(runs, round) {
			progress("builds round %d of %d: %s, %d clients, %s warm-up, %s measured", round+1, cfg.Rounds, s.bin, cfg.Clients, cfg.Warmup, cfg.Duration)
			c := *cfg
			c.WorkerBin = s.bin
			var err error
			if *s.dst, err = throughputOf(ctx, &c, rep, log, progress); err != nil {
				res.Rounds = append(res.Rounds, r) // what the round measured
				return res, fmt.Errorf("%s: %w", s.bin, err)
			}
		}
		if r.Baseline.PerSecond > 0 {
			r.Ratio = r.Candidate.PerSecond / r.Baseline.PerSecond
		}
		r.P50Ratio = p50Ratio(r.Candidate, r.Baseline)
		r.CPURatio = cpuRatio(r.Candidate, r.Baseline)
		res.Rounds = append(res.Rounds, r)
	}
	return res, nil
}

// throughputOf starts a target as cfg says, runs scenario 1's closed loop
// on raw records against it and stops it. rep learns the target's broker
// and PostgreSQL version.
func throughputOf(ctx context.Context, cfg *Config, rep *Report, log zerolog.Logger, progress func(string, ...any)) (ThroughputResult, error) {
	b, stop, err := connect(ctx, cfg, rep, log, progress)
	if err != nil {
		return ThroughputResult{}, err
	}
	defer stop()
	return b.throughput(ctx, filepath.Base(cfg.WorkerBin), b.rawCycler(30*time.Second), false)
}

// failedRound says a round's ratios do not compare the builds when
// commands failed in it: a failed command's time to fail is in the acquire
// p50, but the rate and the CPU per command count only the commands that
// completed, so none of the three is the build's own working figure.
func failedRound(errs int64) string {
	if errs == 0 {
		return ""
	}
	return fmt.Sprintf("; NOT COMPARABLE: %d errors", errs)
}

func (r *BuildsResult) print(w io.Writer, cfg *Config) {
	fmt.Fprintf(w, "\nbuilds: candidate %s against baseline %s, %d clients, alternating; CPU ms per command (%s)\n",
		r.Candidate, r.Baseline, r.Clients, cpuCounted(cfg))
	fmt.Fprint(w, unbalanced([]string{"baseline", "candidate"}, len(r.Rounds)))
	for i, x := range r.Rounds {
		for _, t := range []struct {
			name string
			r    ThroughputResult
		}{{"baseline", x.Baseline}, {"candidate", x.Candidate}} {
			fmt.Fprintf(w, "  round %d  %-9s %8s cmd/s  acquire p50 %7.2f ms  p99 %7.2f ms  CPU %s  errors %d%s\n",
				i+1, t.name, fmtNum(t.r.PerSecond), t.r.Acquire.P50, t.r.Acquire.P99, fmtCPUPerCommand(t.r), t.r.Errors, fmtUnanswered(t.r.Unanswered))
		}
		fmt.Fprintf(w, "  round %d  candidate / baseline: throughput %.2fx, acquire p50 %s, CPU per command %s%s\n", i+1, x.Ratio, fmtRatio(x.P50Ratio), fmtRatio(x.CPURatio),
			failedRound(x.Baseline.Errors+x.Candidate.Errors))
	}
}
