package pollpause

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The waits of a run of error-only polls double from 100 ms up to 1 s, a
// poll with records starts them over, an empty poll leaves them, and an
// ended context cuts a wait short (here every one: the context has ended,
// so the test does not wait them out).
func TestPauseDoublesAndStartsOver(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	var p Pause
	var waits []time.Duration
	errorsOnly := func() {
		require.ErrorIs(t, p.After(ended, 0, 1), context.Canceled)
		waits = append(waits, p.last)
	}
	for range 6 {
		errorsOnly()
	}
	require.NoError(t, p.After(ended, 0, 0), "an empty poll does not wait")
	errorsOnly()
	require.NoError(t, p.After(ended, 1, 1), "records with errors do not wait")
	errorsOnly()
	ms := time.Millisecond
	require.Equal(t, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second, 100 * ms}, waits)
}

// A wait lasts its pause when the context does not end.
func TestPauseWaits(t *testing.T) {
	var p Pause
	start := time.Now()
	require.NoError(t, p.After(context.Background(), 0, 1))
	require.GreaterOrEqual(t, time.Since(start), first)
}
