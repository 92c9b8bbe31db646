package main

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// TestThroughputCutShort: a window that ends early (a signal) is an error,
// its figures not reported; a whole window reports them.
func TestThroughputCutShort(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Warmup = 2, 50*time.Millisecond
	b := &bench{cfg: &cfg, t: &target{}, progress: t.Logf}
	cycle := func(ctx context.Context, _, _ int) (time.Duration, time.Duration, int, error) {
		time.Sleep(time.Millisecond)
		return time.Millisecond, time.Millisecond, 2, nil
	}

	cfg.Duration = 300 * time.Millisecond
	r, err := b.throughput(context.Background(), "fake", cycle, false)
	require.NoError(t, err)
	require.Positive(t, r.Commands)
	require.Positive(t, r.Acquire.N)

	cfg.Duration = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r, err = b.throughput(ctx, "fake", cycle, false)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "cut short")
	require.Equal(t, ThroughputResult{Via: "fake", Clients: 2}, r)
}

// cancelAfter cancels a run a while after its progress says want, or at
// once with now.
type cancelAfter struct {
	want   string
	now    bool
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.want) {
		c.once.Do(func() {
			if c.now {
				c.cancel()
				return
			}
			time.AfterFunc(time.Second, c.cancel)
		})
	}
	return len(p), nil
}

// TestScenariosCutShort: latency, expiry and ceiling runs that a signal
// ends are errors, and the report has no figures of theirs.
func TestScenariosCutShort(t *testing.T) {
	for _, c := range []struct {
		progress string
		flags    []string
		figures  func(*Report) bool
	}{
		{"2 latency", []string{"--scenario", "latency", "--warmup", "300ms", "--latency-duration", "1m"}, func(r *Report) bool { return r.Latency != nil }},
		{"4 expiry", []string{"--scenario", "expiry", "--leases", "20", "--lease", "1m"}, func(r *Report) bool { return r.Expiry != nil }},
		{"6 ceiling", []string{"--scenario", "ceiling", "--ceiling-duration", "1m"}, func(r *Report) bool { return len(r.Ceiling) > 0 }},
	} {
		t.Run(c.progress, func(t *testing.T) {
			cfg, err := parseFlags(append([]string{"--quick", "--broker-memory"}, c.flags...), &bytes.Buffer{})
			require.NoError(t, err)
			testdb.Require(t) // no PostgreSQL: fail saying how to provide one
			cfg.DatabaseURL = testdb.URL()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rep, err := run(ctx, cfg, &cancelAfter{want: c.progress, cancel: cancel})
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorContains(t, err, "cut short")
			require.False(t, c.figures(rep))
		})
	}
}

// TestBurstAndSoakCutShort: a burst or a soak that a signal ends is an
// error wrapping it, not a timeout, and the report keeps no figures of
// it (not the commands answered so far, not the soak's windows so far),
// but still the figures and goals of the scenarios that completed before.
func TestBurstAndSoakCutShort(t *testing.T) {
	for _, c := range []struct {
		name, progress string
		flags          []string
		figures        func(*Report) bool
	}{
		// Cancelled as the burst starts: no answer comes before the
		// signal, which a timeout of a minute must not be taken for.
		{"burst", "burst: acquire", []string{"--scenario", "contention,burst", "--burst-locks", "5000"}, func(r *Report) bool { return r.Burst != nil }},
		// Cancelled as the first of three windows ends.
		{"soak", "commands/s", []string{"--scenario", "contention,soak", "--soak-duration", "3s", "--soak-window", "1s",
			"--soak-clients", "4", "--soak-locks", "8", "--warmup", "300ms"}, func(r *Report) bool { return r.Soak != nil }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseFlags(append([]string{"--quick", "--broker-memory", "--waiters", "3"}, c.flags...), &bytes.Buffer{})
			require.NoError(t, err)
			testdb.Require(t) // no PostgreSQL: fail saying how to provide one
			cfg.DatabaseURL = testdb.URL()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			rep, err := run(ctx, cfg, &cancelAfter{want: c.progress, now: true, cancel: cancel})
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorContains(t, err, c.name+": cut short")
			require.Less(t, time.Since(start), time.Minute, "the signal ended it, not a timeout")
			require.False(t, c.figures(rep))
			require.NotNil(t, rep.Contention, "contention completed before")
			var goals []string
			for _, g := range rep.Goals {
				goals = append(goals, g.Scenario)
			}
			require.Contains(t, goals, "3 contention", "the report judges what completed")
		})
	}
}

// TestThroughputRecordsFailedCommands: a command that fails (here a
// release that times out after 500 ms, every other cycle) is in the
// latency figures with the time it took to fail, and counted an error.
func TestThroughputRecordsFailedCommands(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Warmup, cfg.Duration = 2, 50*time.Millisecond, 1500*time.Millisecond
	b := &bench{cfg: &cfg, t: &target{}, progress: t.Logf}
	cycle := func(ctx context.Context, _, i int) (time.Duration, time.Duration, int, error) {
		if i%2 == 1 {
			time.Sleep(500 * time.Millisecond)
			return time.Millisecond, 500 * time.Millisecond, 1, errors.New("no answer to release")
		}
		time.Sleep(time.Millisecond)
		return time.Millisecond, time.Millisecond, 2, nil
	}
	r, err := b.throughput(context.Background(), "fake", cycle, false)
	require.NoError(t, err)
	require.Positive(t, r.Errors)
	require.InDelta(t, 500, r.Release.Max, 1, "the timed-out releases are in the figures")
	require.Equal(t, r.Acquire.N, r.Release.N, "every release sent is in the figures")
}

// TestContentionJudgedBySendOrder: the waiters' names sort neither in the
// order they are sent nor against it, so a queue ordered by owner_id,
// whose queue_positions and grants agree with each other, is found unfair
// (judged by the send order, not by the positions the worker told); and
// positions that are not each waiter's place sent are found wrong.
func TestContentionJudgedBySendOrder(t *testing.T) {
	for _, n := range []int{3, 10, 100} {
		sent := waiterNames(n)
		byName, reversed := slices.Sorted(slices.Values(sent)), slices.Clone(sent)
		slices.Reverse(reversed)
		require.Len(t, slices.Compact(slices.Clone(byName)), n, "distinct names")
		require.NotEqual(t, sent, byName, "%d waiters", n)
		require.NotEqual(t, reversed, byName, "%d waiters", n)
	}

	sent := waiterNames(10)
	fifo := map[string]int{}
	for i, o := range sent {
		fifo[o] = i + 1
	}
	var ok ContentionResult
	ok.judge(sent, fifo, sent)
	require.True(t, ok.Fair)
	require.True(t, ok.Positions)
	require.Equal(t, 10, ok.InOrder)

	// Ordered by owner_id: the worker's positions say so, and grants follow.
	byName := slices.Sorted(slices.Values(sent))
	byOwner := map[string]int{}
	for i, o := range byName {
		byOwner[o] = i + 1
	}
	var bad ContentionResult
	bad.judge(sent, byOwner, byName)
	require.False(t, bad.Fair)
	require.False(t, bad.Positions)
	require.Less(t, bad.InOrder, 10)
	require.Contains(t, bad.FirstMismatch, "grant 2 went to cont-w001, sent as #3")
	require.Contains(t, bad.PositionMismatch, "cont-w009, sent as #2, was told queue_position 10")

	// Granted in order, but a position not 1..N.
	skewed := maps.Clone(fifo)
	skewed[sent[0]] = 0
	var pos ContentionResult
	pos.judge(sent, skewed, sent)
	require.True(t, pos.Fair)
	require.False(t, pos.Positions)
}

// answer waits up to d for a command's answer, as long as ctx lasts.
func answer(ctx context.Context, d time.Duration) (time.Duration, error) {
	start := time.Now()
	select {
	case <-ctx.Done():
		return time.Since(start), ctx.Err()
	case <-time.After(d):
		return time.Since(start), nil
	}
}

// TestThroughputCountsCommandsUnansweredAtWindowEnd: a command never
// answered (its wait, as the real 30 s timeout, longer than the window and
// the grace after it) is an error once the grace ends with it unanswered,
// in the figures with its wait so far; a command in flight at the window's
// end and answered in the grace is not.
func TestThroughputCountsCommandsUnansweredAtWindowEnd(t *testing.T) {
	cfg := DefaultConfig()
	// The lost commands are sent early in the warm-up, well before the
	// window (however slowly the machine runs the first cycles).
	cfg.Clients, cfg.Warmup, cfg.Duration, cfg.EndGrace = 3, 500*time.Millisecond, 1500*time.Millisecond, 500*time.Millisecond
	b := &bench{cfg: &cfg, t: &target{}, progress: t.Logf}
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		acqWait, relWait := time.Millisecond, time.Millisecond
		switch {
		case c == 0 && i == 3: // an acquire lost in the warm-up
			acqWait = time.Hour
		case c == 1 && i == 3: // a release lost in the warm-up
			relWait = time.Hour
		}
		a, err := answer(ctx, acqWait)
		if err != nil {
			return a, 0, 0, err
		}
		r, err := answer(ctx, relWait)
		if err != nil {
			return a, r, 1, err
		}
		return a, r, 2, nil
	}
	r, err := b.throughput(context.Background(), "fake", cycle, false)
	require.NoError(t, err)
	require.Equal(t, int64(2), r.Unanswered, "the lost acquire and release; not client 2's last command")
	require.Equal(t, int64(2), r.Errors)
	require.Contains(t, failedRound(r.Errors), "NOT COMPARABLE")
	require.Greater(t, r.Acquire.Max, 2000.0, "the lost acquire's wait, the whole window and grace at least")
	require.Greater(t, r.Release.Max, 2000.0, "the lost release's wait")
	require.Less(t, r.Acquire.Max, 3000.0, "its wait until the grace's end")
}

// TestThroughputAnswersInGraceAreNoErrors: the modes scenario's semaphore
// (every client on one lock of limit 10) at 256 clients and its measured
// rate (10 slots each held ~50 ms, ~400 commands/s) keeps each acquire
// ~1.3 s in the queue. Every command is answered within its own timeout,
// many after the window's end: none is an error, and their queue waits are
// in the figures.
func TestThroughputAnswersInGraceAreNoErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Warmup, cfg.Duration = 256, 3*time.Second, 3*time.Second
	b := &bench{cfg: &cfg, t: &target{}, progress: t.Logf}
	slots := make(chan struct{}, 10)
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		start := time.Now()
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return time.Since(start), 0, 0, ctx.Err()
		}
		a := time.Since(start)
		time.Sleep(50 * time.Millisecond) // held until the release is applied
		<-slots
		return a, time.Millisecond, 2, nil
	}
	r, err := b.throughput(context.Background(), "semaphore model", cycle, false)
	require.NoError(t, err)
	t.Logf("%.0f cmd/s, acquire p50 %.0f ms p99 %.0f ms, errors %d (unanswered %d)", r.PerSecond, r.Acquire.P50, r.Acquire.P99, r.Errors, r.Unanswered)
	require.Zero(t, r.Errors)
	require.Zero(t, r.Unanswered)
	require.Greater(t, r.Acquire.P99, 1000.0, "the queue's waits, those answered in the grace too")
}

// TestThroughputGraceIsNotTheWindow: an acquire sent in the warm-up and
// answered in the grace after the window is in the latency figures but not
// the window's count, and its cycle's release, sent in the grace, is in
// neither.
func TestThroughputGraceIsNotTheWindow(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Warmup, cfg.Duration, cfg.EndGrace = 1, 100*time.Millisecond, 500*time.Millisecond, 5*time.Second
	b := &bench{cfg: &cfg, t: &target{}, progress: t.Logf}
	var cycles atomic.Int64
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		cycles.Add(1)
		a, err := answer(ctx, time.Second)
		if err != nil {
			return a, 0, 0, err
		}
		r, err := answer(ctx, 500*time.Millisecond)
		if err != nil {
			return a, r, 1, err
		}
		return a, r, 2, nil
	}
	r, err := b.throughput(context.Background(), "fake", cycle, false)
	require.NoError(t, err)
	require.Equal(t, int64(1), cycles.Load(), "no cycle starts after the window's end")
	require.Zero(t, r.Commands, "answered after the window")
	require.Zero(t, r.Errors)
	require.Equal(t, int64(1), r.Acquire.N)
	require.InDelta(t, 1000, r.Acquire.Max, 100)
	require.Zero(t, r.Release.N, "sent after the window")
}

// TestSoakCountsCommandsUnansweredAtEnd: a broker with no worker answers
// nothing, and the soak's waits (30 s) are longer than it and the grace
// after it: each client's command still unanswered when the grace ends is
// an error, in the last window's latency with its wait until then.
func TestSoakCountsCommandsUnansweredAtEnd(t *testing.T) {
	ctx := context.Background()
	c, err := kfakeCluster()
	require.NoError(t, err)
	defer c.Close()
	names := topics.DefaultNames()
	require.NoError(t, createTopic(ctx, c.ListenAddrs(), names.Commands, 1))
	d, err := newDriver(ctx, c.ListenAddrs(), names, names.ReplyTopic("lockbench-soak-test"), 1)
	require.NoError(t, err)
	defer d.close()
	cfg := DefaultConfig()
	cfg.Warmup, cfg.SoakDuration, cfg.SoakWindow, cfg.SoakClients, cfg.SoakLocks = 300*time.Millisecond, 2*time.Second, time.Second, 3, 3
	cfg.EndGrace = 500 * time.Millisecond
	b := &bench{cfg: &cfg, t: &target{}, d: d, run: "soak-test", progress: t.Logf}
	res, err := b.soak(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Unanswered)
	require.Equal(t, int64(3), res.Errors)
	last := res.Windows[len(res.Windows)-1].Latency
	require.Equal(t, int64(3), last.N)
	require.Greater(t, last.P50, 2500.0, "each waiting since before the soak began, and through the grace")
	require.Less(t, last.Max, 3500.0, "its wait until the grace's end")
}
