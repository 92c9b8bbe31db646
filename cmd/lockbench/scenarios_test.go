package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
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

// windowProc is a worker process for throughput's CPU readings, which it
// takes at its window's start and end: started is closed at the first,
// ended at the second.
type windowProc struct {
	readings       atomic.Int64
	started, ended chan struct{}
}

func newWindowProc() *windowProc {
	return &windowProc{started: make(chan struct{}), ended: make(chan struct{})}
}

func (p *windowProc) describe() string { return "fake" }

func (p *windowProc) cpu() (time.Duration, error) {
	switch p.readings.Add(1) {
	case 1:
		close(p.started)
	case 2:
		close(p.ended)
	}
	return 0, nil
}

func (p *windowProc) peakRSS() (int64, error) { return 0, nil }

// begun says whether the window has started: a cycle that starts after it
// sends its commands in the window.
func (p *windowProc) begun() bool {
	select {
	case <-p.started:
		return true
	default:
		return false
	}
}

// TestThroughputWarmupIsInNoFigure: an acquire sent in the warm-up that
// fails only once the window has ended (a timeout's wait) is in no figure:
// neither in the latency, its wait having begun before the window, nor in
// the errors.
func TestThroughputWarmupIsInNoFigure(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Warmup, cfg.Duration = 2, 50*time.Millisecond, 300*time.Millisecond
	proc := newWindowProc()
	b := &bench{cfg: &cfg, t: &target{proc: proc}, progress: t.Logf}
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		if c == 0 && i == 0 {
			start := time.Now()
			<-proc.ended
			return time.Since(start), 0, 0, errors.New("no answer to acquire")
		}
		time.Sleep(time.Millisecond)
		return time.Millisecond, time.Millisecond, 2, nil
	}
	r, err := b.throughput(context.Background(), "fake", cycle, false)
	require.NoError(t, err)
	require.Positive(t, r.Commands)
	require.Zero(t, r.Errors, "the warm-up's acquire")
	require.Less(t, r.Acquire.Max, 100.0, "the warm-up's acquire waited the whole window")
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
	cfg.Clients, cfg.Warmup, cfg.Duration, cfg.EndGrace = 3, 100*time.Millisecond, 1500*time.Millisecond, 500*time.Millisecond
	proc := newWindowProc()
	b := &bench{cfg: &cfg, t: &target{proc: proc}, progress: t.Logf}
	// Lost in the first cycle each of clients 0 and 1 starts in the window:
	// lost[c], each client's own.
	var lost [2]bool
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		acqWait, relWait := time.Millisecond, time.Millisecond
		if c < len(lost) && !lost[c] && proc.begun() {
			lost[c] = true
			if c == 0 {
				acqWait = time.Hour // an acquire lost
			} else {
				relWait = time.Hour // a release lost
			}
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
	require.Greater(t, r.Acquire.Max, 1500.0, "the lost acquire's wait, through the window and the grace")
	require.Greater(t, r.Release.Max, 1500.0, "the lost release's wait")
	require.Less(t, r.Acquire.Max, 2500.0, "its wait until the grace's end")
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

// TestThroughputGraceIsNotTheWindow: an acquire sent at the window's start
// and answered in the grace after it is in the latency figures but not the
// window's count, and its cycle's release, sent in the grace, is in
// neither.
func TestThroughputGraceIsNotTheWindow(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Clients, cfg.Warmup, cfg.Duration, cfg.EndGrace = 1, 100*time.Millisecond, 500*time.Millisecond, 5*time.Second
	proc := newWindowProc()
	b := &bench{cfg: &cfg, t: &target{proc: proc}, progress: t.Logf}
	var cycles atomic.Int64
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		cycles.Add(1)
		if i == 0 { // the warm-up's: sent in it, failed in the window, in no figure
			start := time.Now()
			<-proc.started
			return time.Since(start), 0, 0, errors.New("no answer to acquire")
		}
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
	require.Equal(t, int64(2), cycles.Load(), "the warm-up's and the window's: none starts after the window's end")
	require.Zero(t, r.Commands, "answered after the window")
	require.Zero(t, r.Errors)
	require.Equal(t, int64(1), r.Acquire.N)
	require.InDelta(t, 1000, r.Acquire.Max, 100)
	require.Zero(t, r.Release.N, "sent after the window")
}

// soakBench is a bench for the soak on a broker with no worker: only
// answerUntil answers its commands.
func soakBench(t *testing.T, cfg *Config) (*bench, []string, topics.Names) {
	t.Helper()
	ctx := context.Background()
	c, err := kfakeCluster()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	names := topics.DefaultNames()
	require.NoError(t, createTopic(ctx, c.ListenAddrs(), names.Commands, 1))
	d, err := newDriver(ctx, c.ListenAddrs(), names, names.ReplyTopic("lockbench-soak-test"), 1)
	require.NoError(t, err)
	t.Cleanup(d.close)
	cfg.Warmup, cfg.SoakDuration, cfg.SoakWindow, cfg.SoakClients, cfg.SoakLocks = 300*time.Millisecond, 2*time.Second, time.Second, 3, 3
	cfg.EndGrace = 500 * time.Millisecond
	return &bench{cfg: cfg, t: &target{}, d: d, run: "soak-test", progress: t.Logf}, c.ListenAddrs(), names
}

// answerUntil answers each command b's driver sends, read from the commands
// topic, as it was asked, until stop is closed; then none. stopReading
// ends its reader.
func answerUntil(t *testing.T, b *bench, brokers []string, names topics.Names, stop <-chan struct{}) (stopReading func()) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(names.Commands), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				select {
				case <-stop:
					return
				default:
				}
				var c topics.Command
				if json.Unmarshal(r.Value, &c) != nil {
					return
				}
				typ := map[string]string{topics.OpAcquire: topics.TypeAcquired, topics.OpRelease: topics.TypeReleased}[c.Operation]
				b.d.dispatch(reply{ev: topics.Event{RequestID: c.RequestID, Type: typ}, at: time.Now()})
			})
		}
	}()
	return func() {
		cancel()
		<-done
		cl.Close()
	}
}

// TestSoakCountsCommandsUnansweredAtEnd: a worker that stops answering in
// the soak's first window leaves each client a command whose wait (30 s)
// is longer than the soak and the grace after it: each still unanswered
// when the grace ends is an error, in the last window's latency with its
// wait until then.
func TestSoakCountsCommandsUnansweredAtEnd(t *testing.T) {
	cfg := DefaultConfig()
	b, brokers, names := soakBench(t, &cfg)
	// The soak's first scrape of /metrics, SoakScrape into its first
	// window, is where the worker stops answering.
	stop := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { once.Do(func() { close(stop) }) }))
	defer srv.Close()
	b.t.httpAddr, cfg.SoakScrape = srv.Listener.Addr().String(), 200*time.Millisecond
	defer answerUntil(t, b, brokers, names, stop)()
	res, err := b.soak(context.Background())
	require.NoError(t, err)
	require.Positive(t, res.Windows[0].Commands, "answered until the scrape")
	require.Equal(t, int64(3), res.Unanswered)
	require.Equal(t, int64(3), res.Errors)
	last := res.Windows[len(res.Windows)-1].Latency
	require.Equal(t, int64(3), last.N)
	require.Greater(t, last.P50, 1500.0, "each waiting since early in the first window, and through the grace")
	require.Less(t, last.Max, 2500.0, "its wait until the grace's end")
}

// TestSoakWarmupIsInNoFigure: commands sent in the warm-up, here each
// client's first, never answered (a broker with no worker), are in no
// figure of the soak's: not its errors, not its latency.
func TestSoakWarmupIsInNoFigure(t *testing.T) {
	cfg := DefaultConfig()
	b, _, _ := soakBench(t, &cfg)
	res, err := b.soak(context.Background())
	require.NoError(t, err)
	require.Zero(t, res.Errors)
	require.Zero(t, res.Unanswered)
	for i, w := range res.Windows {
		require.Zero(t, w.Latency.N, "window %d", i+1)
	}
}

// TestQuiesceNotesAnOutboxNotDrained: an outbox still holding rows at the
// limit, or that cannot be counted, is a note of the report and a line of
// the progress, naming what ran: the next scenario or round starts under
// that load. An empty outbox says nothing.
func TestQuiesceNotesAnOutboxNotDrained(t *testing.T) {
	testdb.Require(t)
	ctx := context.Background()
	url, drop, err := newSchema(ctx, testdb.URL(), "lockbench_quiesce_test", false)
	require.NoError(t, err)
	t.Cleanup(drop)
	st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 1})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	var progress bytes.Buffer
	b := &bench{t: &target{st: st}, rep: &Report{}, progress: func(format string, args ...any) { fmt.Fprintf(&progress, format+"\n", args...) }}

	b.quiesce(ctx, "the test", time.Second)
	require.Len(t, b.rep.Notes, 1)
	require.Contains(t, b.rep.Notes[0], "after the test, the outbox could not be counted")
	require.Contains(t, b.rep.Notes[0], `relation "outbox" does not exist`)
	require.Contains(t, progress.String(), b.rep.Notes[0])

	_, err = st.Pool.Exec(ctx, `CREATE TABLE outbox (id bigint)`)
	require.NoError(t, err)
	b.rep.Notes = nil
	progress.Reset()
	b.quiesce(ctx, "the test", time.Second)
	require.Empty(t, b.rep.Notes, "an empty outbox is drained")
	require.Empty(t, progress.String())

	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox VALUES (1), (2)`)
	require.NoError(t, err)
	b.quiesce(ctx, "the test", 200*time.Millisecond)
	require.Len(t, b.rep.Notes, 1)
	require.Contains(t, b.rep.Notes[0], "after the test, 2 outbox rows still unpublished after 200ms")
	require.Contains(t, progress.String(), b.rep.Notes[0])
}
