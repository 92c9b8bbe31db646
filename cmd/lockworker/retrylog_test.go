package main

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testlog"
)

// lines are the lines written to b so far.
func lines(b *testlog.Buffer) []string { return strings.Split(strings.TrimSpace(b.String()), "\n") }

// TestMetricRetryLogThrottled: many transactions retrying at once during an
// outage log one warning, not one each; the streak ends with one info line
// once no transaction retried for the quiet spell, and the next retry starts
// a new streak.
func TestMetricRetryLogThrottled(t *testing.T) {
	var out testlog.Buffer
	r := &retryLog{log: zerolog.New(&out), quiet: 200 * time.Millisecond}
	defer r.stop()
	err := errors.New("transient database error: dial tcp: connect: connection refused")
	var wg sync.WaitGroup
	for range 50 { // 50 transactions in flight, 4 retries each
		wg.Go(func() {
			for a := 1; a <= 4; a++ {
				r.retry(a, err, 10*time.Millisecond)
			}
		})
	}
	wg.Wait()
	require.Len(t, lines(&out), 1)
	require.Contains(t, lines(&out)[0], `"level":"warn"`)
	require.Contains(t, lines(&out)[0], `"failures":1,`)
	require.Contains(t, lines(&out)[0], "retrying the transaction")

	require.Eventually(t, func() bool { return len(lines(&out)) == 2 }, 5*time.Second, 10*time.Millisecond)
	end := lines(&out)[1]
	require.Contains(t, end, `"level":"info"`)
	require.Contains(t, end, `"failures":200,`)
	require.Contains(t, end, "stopped")

	r.retry(1, err, time.Millisecond)
	require.Len(t, lines(&out), 3)
	require.Contains(t, lines(&out)[2], `"failures":1,`)
}
