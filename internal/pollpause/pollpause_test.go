package pollpause

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	// failed is a poll's lasting fetch error.
	failed = []kgo.FetchError{{Topic: "t", Err: kerr.TopicAuthorizationFailed}}
	// skipped is a poll's batch past the decompression bound.
	skipped = []kgo.FetchError{{Topic: "t", Err: &kgo.ErrDecompressTooLarge{Topic: "t", NextOffset: 3}}}
)

// The waits of a run of error-only polls double from 100 ms up to 1 s, a
// poll with records or a batch skipped starts them over, an empty poll
// leaves them, and an ended context cuts a wait short (here every one: the context has ended,
// so the test does not wait them out).
func TestPauseDoublesAndStartsOver(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	var p Pause
	var waits []time.Duration
	errorsOnly := func() {
		require.ErrorIs(t, p.After(ended, 0, failed), context.Canceled)
		waits = append(waits, p.last)
	}
	for range 6 {
		errorsOnly()
	}
	require.NoError(t, p.After(ended, 0, nil), "an empty poll does not wait")
	errorsOnly()
	require.NoError(t, p.After(ended, 1, failed), "records with errors do not wait")
	errorsOnly()
	errorsOnly()
	require.NoError(t, p.After(ended, 0, skipped), "a batch skipped does not wait")
	errorsOnly()
	errorsOnly()
	require.NoError(t, p.After(ended, 0, append(skipped, failed...)), "nor with errors")
	errorsOnly()
	ms := time.Millisecond
	require.Equal(t, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second,
		100 * ms, 200 * ms, 100 * ms, 200 * ms, 100 * ms}, waits)
}

// A wait lasts its pause when the context does not end.
func TestPauseWaits(t *testing.T) {
	var p Pause
	start := time.Now()
	require.NoError(t, p.After(context.Background(), 0, failed))
	require.GreaterOrEqual(t, time.Since(start), first)
}
