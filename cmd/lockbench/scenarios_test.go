package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
