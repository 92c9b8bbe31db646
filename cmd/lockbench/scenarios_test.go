package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
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

// cancelAfter cancels a run a while after its progress says want.
type cancelAfter struct {
	want   string
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.want) {
		c.once.Do(func() { time.AfterFunc(time.Second, c.cancel) })
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
